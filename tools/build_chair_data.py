"""Build the CHAIR scorer's shipped data (pvm_probe/benchmarks/data/*.json.xz) from local copies of its sources.

Run once by a maintainer; nothing here downloads. The inputs are the files nltk itself reads:

    --wordnet DIR    WordNet 3.0's dict directory (index.noun ... , noun.exc ...), e.g. Debian's wordnet-base
                     package at /usr/share/wordnet
    --tagger DIR     nltk's averaged perceptron tagger weights: the directory of the three
                     averaged_perceptron_tagger_eng.*.json files of nltk >= 3.9 (nltk_data's
                     packages/taggers/averaged_perceptron_tagger_eng; JSON, never a pickle)
    --punkt DIR      nltk's punkt_tab/english directory (abbrev_types.txt, collocations.tab, sent_starters.txt,
                     ortho_context.tab)

Only what the lemmatiser needs is kept of WordNet: the lemma names of each part of speech and the exception
lists (morphy's inputs), not the synsets. Multi-word lemmas (with an underscore) are dropped unless an
exception list names them: a word token reaches one only through its exception list, since the suffix
rules keep a word's underscores, and a multi-word lemma is never a COCO word, so the rest cannot change a
result.
"""

from __future__ import annotations

import argparse
import json
import lzma
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "pvm_probe" / "benchmarks" / "data"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


def wordnet_tables(root: Path) -> dict:
    lemmas, exceptions = {}, {}
    for pos, name in POS_FILES.items():
        table = {}
        for line in (root / f"{name}.exc").read_text(encoding="utf-8").splitlines():
            terms = line.split()
            if terms:
                table[terms[0]] = terms[1:]  # a later line replaces an earlier one, as nltk's loader does
        exceptions[pos] = table
        targets = {lemma for forms in table.values() for lemma in forms}
        words = set()
        for line in (root / f"index.{name}").read_text(encoding="utf-8").splitlines():
            if line and not line.startswith(" "):
                lemma, file_pos = line.split()[:2]
                if file_pos == pos and ("_" not in lemma or lemma in targets):
                    words.add(lemma)
        lemmas[pos] = sorted(words)
    return {"source": "WordNet 3.0 (Princeton University), index.* lemma names and *.exc exception lists",
            "lemmas": lemmas, "exceptions": exceptions}


def tagger_tables(path: Path) -> dict:
    stem = path / "averaged_perceptron_tagger_eng"
    weights, tagdict, classes = (json.loads(Path(f"{stem}.{part}.json").read_text())
                                 for part in ("weights", "tagdict", "classes"))
    classes = sorted(classes)
    index = {c: i for i, c in enumerate(classes)}
    # per feature: [class index, weight x 1000, ...]; nltk's released weights have three decimals
    packed = {}
    for feature, by_class in weights.items():
        flat = []
        for tag, weight in by_class.items():
            milli = round(weight * 1000)
            assert abs(milli / 1000 - weight) < 1e-9, (feature, tag, weight)
            flat += [index[tag], milli]
        packed[feature] = flat
    return {"source": "nltk averaged perceptron tagger (English, Penn Treebank tags), nltk_data",
            "classes": classes, "tagdict": tagdict, "weights_milli": packed}


def punkt_tables(root: Path) -> dict:
    def lines(name):
        return [line for line in (root / name).read_text(encoding="utf-8").splitlines() if line]

    return {"source": "nltk punkt_tab/english (Kiss & Strunk 2006, trained by Jan Strunk), nltk_data",
            "abbrev_types": lines("abbrev_types.txt"), "sent_starters": lines("sent_starters.txt"),
            "collocations": [line.split("\t") for line in lines("collocations.tab")],
            "ortho_context": {k: int(v) for k, v in (line.split("\t") for line in lines("ortho_context.tab"))}}


def write(name: str, data: dict) -> None:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    (OUT / name).write_bytes(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    print(f"{name}: {len(raw)} bytes of JSON -> {(OUT / name).stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet", type=Path, required=True)
    parser.add_argument("--tagger", type=Path, required=True)
    parser.add_argument("--punkt", type=Path, required=True)
    args = parser.parse_args()
    write("wordnet_morphy.json.xz", wordnet_tables(args.wordnet))
    write("perceptron_tagger.json.xz", tagger_tables(args.tagger))
    write("punkt_english.json.xz", punkt_tables(args.punkt))


if __name__ == "__main__":
    main()
