"""The word pools of the generated task corpora (``llmcomp.text.task_corpora``): real, lowercase English.

Every entry is one tokenizer word (a run of letters: no digits, spaces or inner punctuation), so a
generated line tokenizes back to exactly the words it was built from. The rules of the tasks read
some of these lists (the grammar words: openers, give verbs, prepositions, adverbs, pronouns and the
coreference lexicon); the rest only give the sentences variety. Pools that share a sentence are
disjoint, so a name is never also an object and a noun never a grammar word.
"""

from __future__ import annotations

# --- induction: repeated random word sequences -----------------------------------------------------
INDUCTION_WORDS = (
    "apple", "river", "chair", "cloud", "lamp", "garden", "window", "forest", "bridge", "candle",
    "mirror", "pocket", "ladder", "basket", "engine", "island", "jacket", "kettle", "lemon", "marble",
    "needle", "orange", "pencil", "rabbit", "saddle", "ticket", "violin", "wallet", "anchor", "barrel",
    "button", "carpet", "dragon", "feather", "guitar", "hammer", "insect", "jungle", "kitten", "letter",
    "magnet", "napkin", "oyster", "parrot", "rocket", "silver", "tunnel", "velvet", "walnut", "yellow",
    "bottle", "castle", "desert", "falcon", "ginger", "harbor", "iron", "jelly", "knight", "lizard",
    "meadow", "nickel", "onion", "pepper", "quilt", "ribbon", "spider", "tomato", "umbrella", "valley",
    "winter", "zebra", "bucket", "cactus", "donkey", "fossil", "goblin", "helmet", "igloo", "jigsaw",
)  # fmt: skip

# --- ioi: indirect object identification ------------------------------------------------------------
IOI_OPENERS = ("when", "after", "while")
IOI_NAMES = (
    "mary", "john", "alice", "bob", "sarah", "james", "emma", "david", "anna", "peter", "laura", "mark",
    "lucy", "paul", "kate", "tom", "jane", "mike", "rose", "sam", "lisa", "dan", "nina", "max",
)  # fmt: skip
IOI_PLACES = (
    "store", "park", "school", "market", "beach", "library", "station", "cafe", "garden", "museum",
    "office", "hospital", "restaurant", "zoo", "bakery", "church", "theater", "farm",
)  # fmt: skip
IOI_MOVES = ("went to the", "walked to the", "were at the", "arrived at the")
IOI_GIVE = ("gave", "handed", "passed", "sent", "brought", "showed", "offered", "threw")
IOI_OBJECTS = (
    "drink", "book", "ball", "gift", "letter", "flower", "cake", "pen", "bag", "ticket", "hat", "map",
    "cup", "box", "kite", "note", "coin", "toy", "shell", "card",
)  # fmt: skip

# --- agreement: subject and verb across attractors --------------------------------------------------
AGREEMENT_NOUNS = (
    ("key", "keys"), ("cabinet", "cabinets"), ("box", "boxes"), ("book", "books"), ("door", "doors"),
    ("table", "tables"), ("window", "windows"), ("house", "houses"), ("car", "cars"), ("tree", "trees"),
    ("picture", "pictures"), ("bottle", "bottles"), ("chair", "chairs"), ("lamp", "lamps"),
    ("child", "children"), ("man", "men"), ("woman", "women"), ("mouse", "mice"), ("knife", "knives"),
    ("leaf", "leaves"), ("shelf", "shelves"), ("wolf", "wolves"), ("city", "cities"), ("baby", "babies"),
    ("story", "stories"), ("glass", "glasses"), ("bus", "buses"), ("dish", "dishes"), ("fox", "foxes"),
    ("road", "roads"), ("bridge", "bridges"), ("garden", "gardens"),
)  # fmt: skip
AGREEMENT_PREPS = ("to", "near", "behind", "beside", "under", "above", "of", "on", "in", "with")
AGREEMENT_ADVERBS = ("usually", "often", "always", "still", "really", "sometimes", "certainly", "probably")
AGREEMENT_VERBS = ("is", "are")  # singular, plural
AGREEMENT_ADJECTIVES = (
    "old", "new", "red", "small", "big", "broken", "clean", "heavy", "empty", "dark", "green", "quiet",
    "famous", "strange", "wet", "cold",
)  # fmt: skip

# --- coreference: a pronoun resolved by gender or number --------------------------------------------
#: singular male noun -> its plural; singular female noun -> its plural
COREF_MALE = {
    "king": "kings", "prince": "princes", "father": "fathers", "uncle": "uncles", "brother": "brothers",
    "son": "sons", "husband": "husbands", "waiter": "waiters", "actor": "actors", "monk": "monks",
    "boy": "boys", "man": "men", "nephew": "nephews", "duke": "dukes", "grandfather": "grandfathers",
}  # fmt: skip
COREF_FEMALE = {
    "queen": "queens", "princess": "princesses", "mother": "mothers", "aunt": "aunts", "sister": "sisters",
    "daughter": "daughters", "wife": "wives", "waitress": "waitresses", "actress": "actresses", "nun": "nuns",
    "girl": "girls", "woman": "women", "niece": "nieces", "duchess": "duchesses", "grandmother": "grandmothers",
}  # fmt: skip
COREF_VERBS = ("met", "called", "visited", "thanked", "helped", "followed", "greeted", "watched", "found")
COREF_ENDINGS = ("smiled", "laughed", "waited", "left", "sang", "nodded", "went home", "sat down", "stayed")
#: pronoun -> what its antecedent must be: ("male" | "female", None) for he / she, (None, "plural") for they
COREF_PRONOUNS = {"he": ("male", "singular"), "she": ("female", "singular"), "they": (None, "plural")}


def coref_features(noun: str) -> tuple[str, str] | None:
    """(gender, number) of a coreference noun, or None for a word outside the lexicon."""
    for gender, table in (("male", COREF_MALE), ("female", COREF_FEMALE)):
        if noun in table:
            return gender, "singular"
        if noun in table.values():
            return gender, "plural"
    return None
