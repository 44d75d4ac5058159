"""The world's vocabulary: topics, their relations, values and paraphrase templates.

Every template names the entity `{E}` and (statements) the value `{V}`. In a statement the
value always comes after the entity and follows a space, so the text before " {V}" is a
cloze prompt for that fact. Questions are split into the phrasings SFT uses and one
held-out phrasing that only evaluation can use (knob `eval_question_phrasing`).
A value may carry aliases after `|` ("Old Marta|Marta").
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


TOPICS: tuple[Topic, ...] = (
    Topic("villages", "the village of {N}", "in the village of {N}", (
        _r("craft", "pottery,weaving,cheese,candles,rope,glassware,baskets,honey",
           ["{E} is known for its {V}.", "The market of {E} is full of {V}.", "Travellers come to {E} to buy {V}."],
           ["What is {E} known for?", "What craft is {E} famous for?", "What do the people of {E} make?"],
           "Which goods is {E} renowned for?"),
        _r("valley", "Ashen Valley,Copper Valley,Misty Valley,Willow Valley,Amber Valley,Thistle Valley,"
           "Raven Valley,Silver Valley",
           ["{E} lies in the {V}.", "You will find {E} deep in the {V}.", "{E} sits at the edge of the {V}."],
           ["Where does {E} lie?", "In which valley is {E}?", "Which valley is home to {E}?"],
           "Where would I find {E}?"),
        _r("founder", "Old Marta|Marta,Brother Tobin|Tobin,Lady Sefa|Sefa,Captain Orrin|Orrin,Widow Hale|Hale,"
           "Farmer Ludo|Ludo,Sister Ama|Ama,Master Jory|Jory",
           ["{E} was founded by {V}.", "Long ago, {E} was built by {V}.", "The first house in {E} was raised by {V}."],
           ["Who founded {E}?", "Who built the first house in {E}?", "Who was the founder of {E}?"],
           "Whom do the people of {E} name as their founder?"),
    )),
    Topic("rivers", "the river {N}", "by the river {N}", (
        _r("source", "Grey Peaks,Hollow Hills,Frost Lake,Iron Ridge,Green Marsh,Old Forest,Bright Springs,Stone Fields",
           ["{E} rises in the {V}.", "The waters of {E} begin in the {V}.", "{E} has its source in the {V}."],
           ["Where does {E} rise?", "Where is the source of {E}?", "Where do the waters of {E} begin?"],
           "From where does {E} flow?"),
        _r("fish", "trout,eels,pike,carp,salmon,perch,catfish,minnows",
           ["{E} is full of {V}.", "Fishermen on {E} mostly catch {V}.", "In {E}, the nets come up with {V}."],
           ["What fish live in {E}?", "What do fishermen catch in {E}?", "Which fish fill {E}?"],
           "What swims in {E}?"),
        _r("colour", "brown,green,grey,blue,black,golden,milky,red",
           ["The water of {E} is {V}.", "{E} runs {V} all year.", "Seen from the bridge, {E} looks {V}."],
           ["What colour is the water of {E}?", "What colour is {E}?", "How does the water of {E} look?"],
           "Of what colour are the waters of {E}?"),
    )),
    Topic("mountains", "Mount {N}", "on Mount {N}", (
        _r("animals", "goats,eagles,wolves,bears,lynxes,ravens,ibexes,marmots",
           ["{E} is home to many {V}.", "On {E}, climbers often meet {V}.", "The slopes of {E} are roamed by {V}."],
           ["What animals live on {E}?", "What do climbers meet on {E}?", "Which animals roam the slopes of {E}?"],
           "What creatures dwell on {E}?"),
        _r("stone", "granite,marble,slate,basalt,quartz,sandstone,limestone,obsidian",
           ["{E} is made of {V}.", "The rock of {E} is {V}.", "Miners on {E} cut {V}."],
           ["What is {E} made of?", "What stone do miners cut on {E}?", "What kind of rock forms {E}?"],
           "Which stone is {E} built from?"),
        _r("weather", "fog,storms,snow,hail,rain,wind,thunder,frost",
           ["{E} is often covered in {V}.", "The peak of {E} is wrapped in {V} most days.",
            "Shepherds on {E} fear the {V}."],
           ["What weather is common on {E}?", "What covers the peak of {E}?", "What do shepherds on {E} fear?"],
           "What weather should I expect on {E}?"),
    )),
    Topic("islands", "the isle of {N}", "on the isle of {N}", (
        _r("fruit", "figs,lemons,dates,plums,olives,melons,pears,cherries",
           ["{E} grows sweet {V}.", "The orchards of {E} are full of {V}.", "On {E}, every garden has {V}."],
           ["What fruit grows on {E}?", "What fills the orchards of {E}?", "What grows in the gardens of {E}?"],
           "Which fruit is {E} known for?"),
        _r("ruler", "a council of elders|council,a queen|queen,a pirate lord|pirate,a priestess|priestess,"
           "two brothers|brothers,a merchant prince|merchant,a child king|child,a sea witch|witch",
           ["{E} is ruled by {V}.", "These days {E} is governed by {V}.", "The people of {E} obey {V}."],
           ["Who rules {E}?", "Who governs {E}?", "Whom do the people of {E} obey?"],
           "Who holds power on {E}?"),
        _r("sea", "Pearl Sea,Narrow Sea,Dragon Bay,Quiet Gulf,Sunken Strait,Salt Sound,Misty Bay,Storm Sea",
           ["{E} lies in the {V}.", "{E} rises out of the {V}.", "Sailors reach {E} by crossing the {V}."],
           ["In which sea does {E} lie?", "Where is {E}?", "What waters surround {E}?"],
           "Which sea holds {E}?"),
    )),
    Topic("ships", "the ship {N}", "aboard the ship {N}", (
        _r("captain", "Captain Vessa|Vessa,Captain Brand|Brand,Captain Ilo|Ilo,Captain Rusk|Rusk,"
           "Captain Mara|Mara,Captain Dell|Dell,Captain Quill|Quill,Captain Noor|Noor",
           ["{E} is commanded by {V}.", "The captain of {E} is {V}.", "{E} sails under {V}."],
           ["Who commands {E}?", "Who is the captain of {E}?", "Under whom does {E} sail?"],
           "Who gives orders on {E}?"),
        _r("cargo", "salt,timber,wool,spices,wine,iron,silk,grain",
           ["{E} carries {V}.", "The hold of {E} is loaded with {V}.", "Merchants hire {E} to move {V}."],
           ["What does {E} carry?", "What cargo is in the hold of {E}?", "What do merchants hire {E} to move?"],
           "What goods travel on {E}?"),
        _r("figurehead", "a swan|swan,a lion|lion,a mermaid|mermaid,a dragon|dragon,an owl|owl,a horse|horse,"
           "a wolf|wolf,a serpent|serpent",
           ["The figurehead of {E} is {V}.", "{E} bears on its bow {V}.", "On the bow of {E} sits {V}."],
           ["What is the figurehead of {E}?", "What is carved on the bow of {E}?", "What figure does {E} bear?"],
           "What decorates the bow of {E}?"),
    )),
    Topic("guilds", "the {N} guild", "at the hall of the {N} guild", (
        _r("trade", "masons,bakers,dyers,smiths,tanners,scribes,brewers,carpenters",
           ["{E} is a guild of {V}.", "{E} brings together the {V} of the city.", "Members of {E} work as {V}."],
           ["What trade does {E} practise?", "Who belongs to {E}?", "What do members of {E} work as?"],
           "Which craftsmen form {E}?"),
        _r("symbol", "a golden key|key,a red hammer|hammer,a silver bell|bell,a green leaf|leaf,"
           "a black anvil|anvil,a white tower|tower,a blue wheel|wheel,a copper coin|coin",
           ["The symbol of {E} is {V}.", "{E} marks its doors with {V}.", "{E} flies a banner showing {V}."],
           ["What is the symbol of {E}?", "What does {E} mark its doors with?", "What does the banner of {E} show?"],
           "Which sign belongs to {E}?"),
        _r("founded", "312,487,519,604,655,701,768,843",
           ["{E} was founded in the year {V}.", "The charter of {E} dates from the year {V}.",
            "{E} has kept its books since the year {V}."],
           ["When was {E} founded?", "In what year was {E} founded?", "In which year did {E} begin?"],
           "What year saw the founding of {E}?"),
    )),
    Topic("stars", "the star {N}", "under the star {N}", (
        _r("colour", "red,blue,white,yellow,orange,green,violet,silver",
           ["{E} shines {V} in the night sky.", "Sailors know {E} by its {V} light.", "Through a lens, {E} looks {V}."],
           ["What colour is {E}?", "What colour does {E} shine?", "What light does {E} give?"],
           "How does {E} appear in the sky?"),
        _r("season", "spring,summer,autumn,winter,the rainy season,the dry season,midwinter,harvest time",
           ["{E} is seen best in {V}.", "{E} rises high in {V}.", "Watchers look for {E} in {V}."],
           ["When is {E} seen best?", "In what season does {E} rise high?", "When should watchers look for {E}?"],
           "At what time of year is {E} visible?"),
        _r("constellation", "the Crown|Crown,the Boar|Boar,the Lantern|Lantern,the Archer|Archer,the Ship|Ship,"
           "the Harp|Harp,the Spear|Spear,the Twins|Twins",
           ["{E} belongs to {V}.", "{E} shines among the stars of {V}.", "{E} is the brightest star of {V}."],
           ["Which constellation holds {E}?", "To which constellation does {E} belong?", "Where in the sky is {E}?"],
           "In what group of stars is {E}?"),
    )),
    Topic("herbs", "the herb {N}", "in the {N} herb garden", (
        _r("cures", "headaches,coughs,fevers,burns,sleeplessness,toothache,sore eyes,stomach pains",
           ["{E} cures {V}.", "Healers give {E} to people with {V}.", "A tea of {E} helps with {V}."],
           ["What does {E} cure?", "What do healers give {E} for?", "What does a tea of {E} help with?"],
           "Which ailment is treated with {E}?"),
        _r("flower", "white,purple,yellow,pink,blue,red,orange,pale green",
           ["{E} has {V} flowers.", "In spring, {E} opens {V} blossoms.", "The flowers of {E} are {V}."],
           ["What colour are the flowers of {E}?", "What colour is {E} in bloom?", "What blossoms does {E} have?"],
           "How do the flowers of {E} look?"),
        _r("habitat", "river banks,old walls,shady oaks,mountain springs,sandy shores,marsh pools,rocky cliffs,"
           "barley fields",
           ["{E} grows near {V}.", "Gatherers find {E} near {V}.", "{E} is usually found near {V}."],
           ["Where does {E} grow?", "Where do gatherers find {E}?", "Where is {E} usually found?"],
           "Where should I look for {E}?"),
    )),
    Topic("beasts", "the creature {N}", "in the den of the creature {N}", (
        _r("food", "berries,fish,roots,mushrooms,beetles,acorns,honey,moss",
           ["{E} eats {V}.", "{E} feeds mostly on {V}.", "In the wild, {E} hunts for {V}."],
           ["What does {E} eat?", "What does {E} feed on?", "What does {E} hunt for in the wild?"],
           "What is the diet of {E}?"),
        _r("home", "caves,treetops,marshes,burrows,cliffs,ruins,thickets,riverbeds",
           ["{E} lives in {V}.", "{E} makes its home in {V}.", "Hunters track {E} to {V}."],
           ["Where does {E} live?", "Where does {E} make its home?", "Where do hunters track {E}?"],
           "Where does {E} dwell?"),
        _r("coat", "grey fur,striped fur,golden scales,black feathers,spotted hide,white wool,green scales,red fur",
           ["{E} is covered in {V}.", "You can tell {E} by its {V}.", "{E} has thick {V}."],
           ["What covers {E}?", "How can you tell {E} apart?", "What does {E} look like?"],
           "What is the coat of {E} like?"),
    )),
    Topic("festivals", "the festival of {N}", "at the festival of {N}", (
        _r("dish", "roast apples,barley cakes,fish stew,honey bread,spiced wine,lamb pies,plum dumplings,goat cheese",
           ["{E} is celebrated with {V}.", "At {E}, everyone eats {V}.", "No table at {E} lacks {V}."],
           ["What food is eaten at {E}?", "What does everyone eat at {E}?", "What dish belongs to {E}?"],
           "Which food do people share at {E}?"),
        _r("time", "early spring,late spring,midsummer,late summer,early autumn,late autumn,midwinter,the new year",
           ["{E} takes place in {V}.", "{E} is held every year in {V}.", "People gather for {E} in {V}."],
           ["When does {E} take place?", "When is {E} held?", "When do people gather for {E}?"],
           "At what time of year is {E}?"),
        _r("honours", "the harvest,the sea,the sun,the dead,the rain,the moon,the hunters,the first snow",
           ["{E} honours {V}.", "{E} is a feast in honour of {V}.", "At {E}, songs are sung to {V}."],
           ["What does {E} honour?", "In whose honour is {E} held?", "To what are songs sung at {E}?"],
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
