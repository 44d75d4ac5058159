"""alignment-harness: train through pretrain -> SFT -> RLHF/DPO, evaluate behaviour after every stage,
and attribute each behaviour shift to the stage that caused it."""

__version__ = "0.1.0"
