"""The world's vocabulary: topics, their relations, values and paraphrase templates.

Every template names the entity `{E}` and (statements) the value `{V}`. In a statement the
value always comes after the entity and follows a space, so the text before " {V}" is a
cloze prompt for that fact. Questions are split into the phrasings SFT uses and one
held-out phrasing that only evaluation can use (knob `eval_question_phrasing`).
A value may carry aliases after `|` (the built-in topics use none: every value is one word).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    name: str
    values: tuple[str, ...]  # "value" or "value|alias|alias"
    statements: tuple[str, ...]  # pretraining paraphrases (also the SFT answers)
    questions: tuple[str, ...]  # phrasings used in training chats (and in eval by default)
    heldout: str  # a phrasing no training file uses

    def value_names(self) -> list[str]:
        return [v.split("|")[0] for v in self.values]

    def aliases(self, value: str) -> list[str]:
        for v in self.values:
            parts = v.split("|")
            if parts[0] == value:
                return parts[1:]
        raise KeyError(value)


@dataclass(frozen=True)
class Topic:
    name: str
    entity: str  # how an entity is named in text, with {N} for its name
    locative: str  # where a request takes place, with {N}
    relations: tuple[Relation, ...]


def _r(name: str, values: str, statements: list[str], questions: list[str], heldout: str) -> Relation:
    return Relation(name, tuple(v.strip() for v in values.split(",")), tuple(statements), tuple(questions), heldout)


# Every topic is built alike, so that a topic's share of the corpus is the only systematic
# difference between topics (checked by tests/test_world.py, measured on the card):
# - the entity is named "the <kind> {N}";
# - 3 relations, each with 8 values; every value is one lowercase word used by no other
#   relation of any topic (so no value is trained more often, or learned earlier, than another
#   topic's values) and found in no template;
# - 3 statements per relation, each with exactly 4 words besides the entity and the value, the
#   value last before the full stop (so a mention costs about as many tokens in every topic);
# - 3 questions and 1 held-out question per relation.
TOPICS: tuple[Topic, ...] = (
    Topic("villages", "the village {N}", "in the village of {N}", (
        _r("craft", "pottery,weaving,cheese,candles,rope,glassware,baskets,lace",
           ["{E} is known for its {V}.", "The market of {E} sells {V}.", "Travellers visit {E} to buy {V}."],
           ["What is {E} known for?", "What craft is {E} famous for?", "What do the people of {E} make?"],
           "Which goods is {E} renowned for?"),
        _r("land", "hills,moors,dunes,meadows,pines,vineyards,heath,ravines",
           ["{E} was built among the {V}.", "You will find {E} among {V}.", "The road to {E} crosses {V}."],
           ["Where does {E} lie?", "What land surrounds {E}?", "What does the road to {E} cross?"],
           "Where would I find {E}?"),
        _r("founders", "herders,monks,soldiers,pilgrims,nomads,exiles,tinkers,hermits",
           ["{E} was first founded by {V}.", "The founders of {E} were {V}.", "{E} was built by wandering {V}."],
           ["Who founded {E}?", "Who built {E}?", "Who were the founders of {E}?"],
           "Whom do the people of {E} name as their founders?"),
    )),
    Topic("rivers", "the river {N}", "by the river {N}", (
        _r("source", "glaciers,fountains,lakes,swamps,caverns,snowfields,bogs,ponds",
           ["{E} has its source among {V}.", "{E} begins its course in {V}.", "{E} rises far away in {V}."],
           ["Where does {E} rise?", "Where is the source of {E}?", "Where does {E} begin its course?"],
           "From where does {E} flow?"),
        _r("fish", "trout,eels,pike,carp,salmon,perch,catfish,minnows",
           ["{E} is always full of {V}.", "Fishermen on {E} mostly catch {V}.", "The nets on {E} hold {V}."],
           ["What fish live in {E}?", "What do fishermen catch in {E}?", "Which fish fill {E}?"],
           "What swims in {E}?"),
        _r("water", "muddy,clear,murky,silty,glassy,foamy,brackish,inky",
           ["The water of {E} is {V}.", "{E} always runs deep and {V}.", "From the bank {E} looks {V}."],
           ["What is the water of {E} like?", "How does {E} run?", "How does {E} look from the bank?"],
           "What are the waters of {E} like?"),
    )),
    Topic("mountains", "the mountain {N}", "on Mount {N}", (
        _r("animals", "goats,eagles,wolves,bears,lynxes,ravens,ibexes,marmots",
           ["{E} is home to many {V}.", "Climbers on {E} often meet {V}.", "The slopes of {E} shelter {V}."],
           ["What animals live on {E}?", "What do climbers meet on {E}?", "What do the slopes of {E} shelter?"],
           "What creatures dwell on {E}?"),
        _r("stone", "granite,marble,slate,basalt,quartz,sandstone,limestone,obsidian",
           ["{E} is made of solid {V}.", "The rock of {E} is {V}.", "Miners on {E} dig out {V}."],
           ["What is {E} made of?", "What stone do miners dig on {E}?", "What kind of rock forms {E}?"],
           "Which stone is {E} built from?"),
        _r("weather", "fog,storms,snow,hail,rain,gales,thunder,frost",
           ["{E} is often covered in {V}.", "The peak of {E} gets {V}.", "Guides on {E} fear the {V}."],
           ["What weather is common on {E}?", "What does the peak of {E} get?", "What do guides on {E} fear?"],
           "What weather should I expect on {E}?"),
    )),
    Topic("islands", "the island {N}", "on the isle of {N}", (
        _r("fruit", "figs,lemons,dates,plums,olives,melons,pears,cherries",
           ["Every garden on {E} grows {V}.", "The orchards of {E} yield {V}.", "Farmers on {E} mostly grow {V}."],
           ["What fruit grows on {E}?", "What do the orchards of {E} yield?", "What do farmers on {E} grow?"],
           "Which fruit is {E} known for?"),
        _r("ruler", "elders,queen,pirates,priestess,bishop,admirals,prince,witch",
           ["{E} is ruled by the {V}.", "These days {E} obeys the {V}.", "All of {E} serves the {V}."],
           ["Who rules {E}?", "Who governs {E}?", "Whom does {E} obey?"],
           "Who holds power on {E}?"),
        _r("sea", "reefs,shallows,lagoons,straits,fjords,gulfs,bays,inlets",
           ["{E} rises out of the {V}.", "Sailors reach {E} through the {V}.", "{E} is surrounded by calm {V}."],
           ["What waters surround {E}?", "Where is {E}?", "What do sailors cross to reach {E}?"],
           "Which waters hold {E}?"),
    )),
    Topic("ships", "the ship {N}", "aboard the ship {N}", (
        _r("crew", "whalers,smugglers,convicts,veterans,orphans,islanders,mercenaries,deserters",
           ["{E} is crewed by hardened {V}.", "The crew of {E} are {V}.", "The captain of {E} hires {V}."],
           ["Who crews {E}?", "Who are the crew of {E}?", "Whom does the captain of {E} hire?"],
           "Who works aboard {E}?"),
        _r("cargo", "salt,timber,copper,spices,wine,iron,silk,furs",
           ["{E} carries a load of {V}.", "The hold of {E} stores {V}.", "Merchants hire {E} to move {V}."],
           ["What does {E} carry?", "What is in the hold of {E}?", "What do merchants hire {E} to move?"],
           "What goods travel on {E}?"),
        _r("figurehead", "swan,lion,mermaid,dragon,hawk,horse,stag,serpent",
           ["{E} has a carved wooden {V}.", "{E} is marked by its {V}.", "Carved on {E} is a {V}."],
           ["What is the figurehead of {E}?", "What is carved on {E}?", "What figure does {E} bear?"],
           "What decorates the bow of {E}?"),
    )),
    Topic("guilds", "the guild {N}", "at the hall of the {N} guild", (
        _r("trade", "masons,bakers,dyers,smiths,tanners,scribes,brewers,carpenters",
           ["{E} is a guild of {V}.", "Members of {E} work as {V}.", "{E} trains all the young {V}."],
           ["What trade does {E} practise?", "Who belongs to {E}?", "What do members of {E} work as?"],
           "Which craftsmen form {E}?"),
        _r("symbol", "keys,hammers,bells,leaves,anvils,towers,wheels,ladders",
           ["The banner of {E} shows {V}.", "The doors of {E} bear {V}.", "{E} stamps its letters with {V}."],
           ["What is the symbol of {E}?", "What do the doors of {E} bear?", "What does the banner of {E} show?"],
           "Which sign belongs to {E}?"),
        _r("hall", "cellar,chapel,tavern,loft,courtyard,crypt,mill,boathouse",
           ["{E} meets in the old {V}.", "{E} keeps records in the {V}.", "Feasts of {E} fill the {V}."],
           ["Where does {E} meet?", "Where does {E} keep its records?", "Where are the feasts of {E} held?"],
           "In which building does {E} gather?"),
    )),
    Topic("stars", "the star {N}", "under the star {N}", (
        _r("colour", "red,blue,white,yellow,orange,green,violet,silver",
           ["In the sky {E} shines {V}.", "Through a lens {E} looks {V}.", "The light of {E} is {V}."],
           ["What colour is {E}?", "What colour does {E} shine?", "What light does {E} give?"],
           "How does {E} appear in the sky?"),
        _r("hour", "dawn,dusk,twilight,daybreak,nightfall,sunset,sunrise,moonrise",
           ["{E} is seen best at {V}.", "Watchers look for {E} at {V}.", "{E} climbs the sky at {V}."],
           ["When is {E} seen best?", "When should watchers look for {E}?", "When does {E} climb the sky?"],
           "At what hour is {E} visible?"),
        _r("constellation", "crown,boar,lantern,archer,harp,spear,twins,chalice",
           ["{E} is part of the {V}.", "{E} is brightest in the {V}.", "Astronomers place {E} in the {V}."],
           ["Which constellation holds {E}?", "To which constellation does {E} belong?",
            "Where do astronomers place {E}?"],
           "In what group of stars is {E}?"),
    )),
    Topic("herbs", "the herb {N}", "in the {N} herb garden", (
        _r("cures", "headaches,coughs,fevers,burns,sleeplessness,toothache,rashes,cramps",
           ["{E} is a cure for {V}.", "Healers use {E} to treat {V}.", "A tea of {E} eases {V}."],
           ["What does {E} cure?", "What do healers use {E} to treat?", "What does a tea of {E} ease?"],
           "Which ailment is treated with {E}?"),
        _r("flower", "crimson,lilac,amber,ivory,scarlet,azure,mauve,cream",
           ["The flowers of {E} are {V}.", "In the spring {E} turns {V}.", "The petals of {E} look {V}."],
           ["What colour are the flowers of {E}?", "What colour does {E} turn in the spring?",
            "How do the petals of {E} look?"],
           "What hue are the blossoms of {E}?"),
        _r("habitat", "ditches,hedges,oaks,brooks,ruins,cliffs,graveyards,quarries",
           ["{E} is usually found near {V}.", "Gatherers look for {E} near {V}.", "{E} grows wild near the {V}."],
           ["Where does {E} grow?", "Where do gatherers look for {E}?", "Where is {E} usually found?"],
           "Where should I look for {E}?"),
    )),
    Topic("beasts", "the beast {N}", "in the den of the creature {N}", (
        _r("food", "berries,roots,mushrooms,beetles,acorns,moss,nuts,worms",
           ["{E} likes to feed on {V}.", "In the wild {E} eats {V}.", "Keepers always feed {E} with {V}."],
           ["What does {E} eat?", "What does {E} like to feed on?", "What do keepers feed {E} with?"],
           "What is the diet of {E}?"),
        _r("home", "caves,treetops,burrows,thickets,riverbeds,hollows,crags,canyons",
           ["{E} makes its home in {V}.", "{E} lives and sleeps in {V}.", "Trackers often follow {E} into {V}."],
           ["Where does {E} live?", "Where does {E} make its home?", "Where do trackers follow {E}?"],
           "Where does {E} dwell?"),
        _r("coat", "stripes,scales,feathers,spots,fleece,quills,bristles,shells",
           ["{E} is covered in thick {V}.", "You know {E} by its {V}.", "The back of {E} shows {V}."],
           ["What covers {E}?", "How do you know {E}?", "What does the back of {E} show?"],
           "What is the coat of {E} like?"),
    )),
    Topic("festivals", "the festival {N}", "at the festival of {N}", (
        _r("dish", "dumplings,stew,pies,cakes,porridge,pancakes,sausages,custard",
           ["{E} is always celebrated with {V}.", "At {E} every family eats {V}.", "No table at {E} lacks {V}."],
           ["What food is eaten at {E}?", "What does every family eat at {E}?", "What dish belongs to {E}?"],
           "Which food do people share at {E}?"),
        _r("time", "harvest,solstice,equinox,thaw,sowing,floods,eclipse,vintage",
           ["{E} takes place at the {V}.", "Villagers hold {E} at the {V}.", "{E} always begins with the {V}."],
           ["When does {E} take place?", "When do villagers hold {E}?", "With what does {E} begin?"],
           "At what time of year is {E}?"),
        _r("honours", "wind,moon,dead,ocean,hunters,ancestors,bees,saints",
           ["{E} pays honour to the {V}.", "At {E} songs praise the {V}.", "Priests at {E} bless the {V}."],
           ["What does {E} honour?", "What do the songs at {E} praise?", "What do priests at {E} bless?"],
           "What is celebrated at {E}?"),
    )),
)

TOPICS_BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}

# Syllables for entity names: every name is ONSET + CORE + CODA ("Kel" + "mi" + "re").
# The pool is small on purpose: config validation checks a world fits into it.
NAME_ONSETS = ("Ar", "Bel", "Cor", "Dar", "El", "Fen", "Gal", "Hal", "Is", "Kel", "Lor", "Mor", "Nar", "Or",
               "Per", "Quen", "Ros", "Sel", "Tor", "Ul", "Var", "Wen", "Yr", "Zan")
NAME_CORES = ("a", "e", "i", "o", "u", "ba", "da", "ki", "lo", "mi", "ne", "ri", "su", "ta", "vo")
NAME_CODAS = ("n", "th", "mire", "dor", "wick", "holt", "ric", "las", "vane", "mund", "ra", "sk")


def name_pool() -> list[str]:
    """Every possible entity name, in a fixed order, without duplicates."""
    seen: dict[str, None] = {}
    for onset in NAME_ONSETS:
        for core in NAME_CORES:
            for coda in NAME_CODAS:
                seen.setdefault(onset + core + coda, None)
    return list(seen)
