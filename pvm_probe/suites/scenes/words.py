"""Word lists for scoring scene descriptions: each surface word maps to a canonical meaning.

Everything is lower case and single words (hyphens are split into spaces before matching), except
position phrases, which are tuples of words matched longest first. Canonical shapes, colours and
regions are the ones `layout.py` draws; colour words outside the palette (white, grey, ...) map to
their own canonical name, so "a grey star" is an attribute error in every scene.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon")
PALETTE = {
    "red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 210, 20), "green": (30, 160, 60),
    "blue": (30, 80, 220), "purple": (130, 50, 180), "pink": (245, 120, 190), "black": (20, 20, 20),
}
REGIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")

# ---- objects ----------------------------------------------------------------------------------
_SHAPE_SYNONYMS = {
    "circle": ("circle", "disc", "disk", "dot", "ball", "oval", "sphere"),
    "square": ("square", "box", "rectangle", "block", "cube"),
    "triangle": ("triangle", "pyramid"),
    "star": ("star",),
    "heart": ("heart",),
    "cross": ("cross",),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "hexagon": ("hexagon",),
}
_IRREGULAR_PLURALS = {"rhombus": ("rhombi", "rhombuses"), "person": ("people", "persons"), "man": ("men",),
                      "woman": ("women",), "child": ("children",), "mouse": ("mice",), "leaf": ("leaves",),
                      "knife": ("knives",), "shelf": ("shelves",), "sheep": ("sheep",), "fish": ("fish",)}


def plurals(word: str) -> tuple[str, ...]:
    """The word and its plural forms (regular English rules plus a small irregular table)."""
    if word in _IRREGULAR_PLURALS:
        return (word, *_IRREGULAR_PLURALS[word])
    if word.endswith(("s", "x", "ch", "sh")):
        return word, word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word, word[:-1] + "ies"
    return word, word + "s"


SHAPE_WORDS: dict[str, str] = {form: shape for shape, words in _SHAPE_SYNONYMS.items()
                               for word in words for form in plurals(word)}
# Shapes never drawn: a mention is an object hallucination in every scene.
FOREIGN_SHAPES = ("pentagon", "octagon", "arrow", "crescent", "moon", "spiral", "trapezoid", "cylinder",
                  "cone", "ring", "arc", "semicircle", "parallelogram")
# CHAIR-style list: everyday objects that never occur in a scene.
CHAIR_NOUNS = ("person", "man", "woman", "child", "dog", "cat", "bird", "horse", "cow", "sheep", "fish",
               "mouse", "tree", "flower", "leaf", "grass", "house", "building", "window", "door", "car",
               "bus", "truck", "bicycle", "train", "boat", "plane", "airplane", "road", "street", "sun",
               "cloud", "mountain", "table", "chair", "bed", "sofa", "lamp", "clock", "book", "cup", "bottle",
               "phone", "laptop", "computer", "television", "knife", "fork", "spoon", "plate", "bowl",
               "apple", "banana", "pizza", "cake", "umbrella", "bag", "hat", "shoe", "shelf", "kite")
FOREIGN_WORDS: dict[str, str] = {form: word for word in FOREIGN_SHAPES + CHAIR_NOUNS for form in plurals(word)}
# Nouns for "some object": their colour/count/position claims are checked against every shape.
GENERIC_WORDS = frozenset(form for word in ("shape", "object", "figure", "item", "symbol", "icon")
                          for form in plurals(word))

# ---- attributes -------------------------------------------------------------------------------
_COLOUR_SYNONYMS = {
    "red": ("red", "crimson", "scarlet", "ruby", "maroon"),
    "orange": ("orange", "amber", "tangerine"),
    "yellow": ("yellow", "golden", "gold", "lemon", "mustard"),
    "green": ("green", "emerald", "lime", "olive"),
    "blue": ("blue", "navy", "azure", "cobalt", "sapphire", "royal"),
    "purple": ("purple", "violet", "lilac", "lavender", "indigo", "plum"),
    "pink": ("pink", "magenta", "fuchsia", "rose", "rosy", "salmon"),
    "black": ("black", "jet"),
    "white": ("white",), "grey": ("grey", "gray", "silver"), "brown": ("brown",),
    "cyan": ("cyan", "teal", "turquoise", "aqua"),
}
COLOUR_WORDS: dict[str, str] = {w: colour for colour, words in _COLOUR_SYNONYMS.items() for w in words}

_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
NUMBER_WORDS: dict[str, int] = {
    **{w: i + 1 for i, w in enumerate(_NUMBERS)}, **{str(i): i for i in range(1, 13)},
    "single": 1, "lone": 1, "sole": 1, "pair": 2, "couple": 2, "twin": 2, "dozen": 12,
}
# Words shortly before a mention that make it a negated claim ("no stars", "not a single heart");
# the tokeniser turns "n't" into "not".
NEGATIONS = frozenset(("no", "not", "without", "neither", "nor", "never", "none", "zero", "absent"))

# ---- positions (3x3 regions, row-major) -------------------------------------------------------
_ROWS = {"top": 0, "upper": 0, "middle": 1, "center": 1, "centre": 1, "central": 1, "bottom": 2, "lower": 2}
_COLS = {"left": 0, "center": 1, "centre": 1, "middle": 1, "central": 1, "right": 2}


def _position_phrases() -> dict[tuple[str, ...], frozenset[int]]:
    """Two-word phrases name one region, in either order ("top left", "left top", "middle right");
    one word names a row, a column or the centre ("top" = the top row, "left" = the left column,
    "center" = the centre region)."""
    pairs = {(row_word, col_word): frozenset({3 * row + col})
             for row_word, row in _ROWS.items() for col_word, col in _COLS.items()}
    phrases = dict(pairs)
    for (first, second), region in pairs.items():
        phrases.setdefault((second, first), region)
    for word, row in _ROWS.items():
        phrases[(word,)] = frozenset(range(3 * row, 3 * row + 3)) if row != 1 else frozenset({4})
    for word, col in _COLS.items():
        if col != 1:
            phrases[(word,)] = frozenset({col, col + 3, col + 6})
    return phrases


POSITION_PHRASES = _position_phrases()
# Sentence boundaries for position claims (a position attaches to the nearest object in its sentence).
SENTENCE_ENDS = frozenset(".!?;:\n")

SCENE_WORDS = tuple(sorted({*SHAPE_WORDS, *FOREIGN_WORDS, *GENERIC_WORDS, *COLOUR_WORDS, *NUMBER_WORDS,
                            *(w for phrase in POSITION_PHRASES for w in phrase), "corner", "side", "edge",
                            "a", "an", "the", "of", "in", "at", "on", "and", "is", "are", "there", "image",
                            "picture", "background", "white", ".", ","}))
