"""Image tagging on executors, behind one interface, and the tag-vocabulary helpers the `tagvocab` stage ships.

`Tagger` is what the generate stage calls per Arrow batch: `inputs` names the column it needs
("embedding": the stored CLIP image vector; a model tagger in the manner of RAM++ would say "image_bytes"
and decode through udfs.pixels), `tag(frame)` returns one list of tags per row. `ClipZeroShotTagger` is the
one built here: the vocabulary's prompt-ensembled CLIP text embeddings (computed once per vocabulary
version and CLIP model, table `tag_embeddings`) against the image embedding, top-k above an optional floor.

Noun-phrase mining (`noun_phrases`): spaCy noun chunks of the kept sentences, reduced to concrete tag
candidates: the chunk's head noun lemma, and its compound modifiers + head ("fire truck"), lower-cased;
proper nouns, pronouns, numbers, stop words and a list of abstract/generic nouns are dropped.
"""
from __future__ import annotations

import threading
from typing import Iterator, Protocol, Sequence

import numpy as np
import pandas as pd

TAG_PROMPTS = ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a picture of a {}.",
               "a photo of many {}.", "a cropped photo of a {}.")


class Tagger(Protocol):
    """What the generate stage needs from a tagger: the input column it reads and tags per row."""
    inputs: str

    def tag(self, frame: pd.DataFrame) -> list[list[str]]:
        ...


class ClipZeroShotTagger:
    """Zero-shot CLIP tags: cosine of the image embedding to each tag's ensembled text embedding."""
    inputs = "embedding"

    def __init__(self, names: Sequence[str], matrix: np.ndarray, n_tags: int, min_score: float | None):
        self.names, self.matrix, self.n_tags, self.min_score = np.asarray(names), matrix, n_tags, min_score

    def tag(self, frame: pd.DataFrame) -> list[list[str]]:
        from udfs.retrieval import stack, top_k_indices

        scores = stack(frame["embedding"]) @ self.matrix.T
        best = top_k_indices(scores, self.n_tags)
        return [list(self.names[[i for i in idx if self.min_score is None or row[i] >= self.min_score]])
                for row, idx in zip(scores, best)]


def tag_images(make_tagger):
    """mapInPandas body: (image_id, <tagger.inputs>) -> (image_id, tags). `make_tagger()` runs on the
    executor; its arrays come through the closure or `udfs.shipped` (read once per Python worker)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        tagger = make_tagger()
        for frame in batches:
            if not frame.empty:
                yield pd.DataFrame({"image_id": frame["image_id"].to_numpy(), "tags": tagger.tag(frame)})
    return run


def embed_tags(embed_cfg: dict, batch_size: int = 256):
    """mapInPandas body: (tag) -> (tag, embedding): the mean of the tag's TAG_PROMPTS embeddings,
    renormalised (CLIP's prompt ensembling), with the CLIP model loaded once per Python worker."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from udfs.clip_embed import load_clip

        bundle = None
        for frame in batches:
            if frame.empty:
                continue
            bundle = bundle or load_clip(embed_cfg)
            names = list(frame["tag"])
            texts = [p.format(n) for n in names for p in TAG_PROMPTS]
            vectors = bundle.embed_texts(texts, batch_size).reshape(len(names), len(TAG_PROMPTS), -1).mean(axis=1)
            vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
            yield pd.DataFrame({"tag": names, "embedding": list(vectors)})
    return run


# ------------------------------------------------------------------------------------ noun-phrase mining
# Nouns that name no visible thing (time, quantity, discourse, generic placeholders). A tag vocabulary
# is for objects and scenes an image tagger can see; these dominate raw noun-chunk counts.
ABSTRACT_NOUNS = frozenset("""
time times day days year years week weeks month months hour hours minute minutes second moment moments
today tomorrow yesterday night morning evening afternoon century decade age era period season date
way ways thing things lot lots kind kinds sort sorts type types part parts piece bit number numbers amount
level levels side end start beginning top bottom middle front back rest half place places area areas
point points fact facts idea ideas reason reasons problem problems question questions issue issues
case cases example examples information info detail details story stories news use uses work job
experience experiences life world way result results effect effects change changes difference
system systems process service services program programs project projects plan plans policy
thanks thank hope need needs interest interests help support quality value values price prices cost
size shape form forms order group groups member members set series list lists line lines range
word words name names term terms page pages site website article post posts click link links email
year-old percent percentage total majority minority love fun joy care sense mind thought thoughts
look looks view views opinion way chance choice option options opportunity opportunities access
right rights power control state status condition conditions situation situations position
feature features design style version versions source sources content contents text note notes
everything something anything nothing everyone someone anyone nobody other others one ones
""".split())
ABSTRACT_SUFFIXES = ("ness", "ity", "ism", "ship", "hood", "ance", "ence")

_NLP: dict[str, object] = {}
_LOCK = threading.Lock()


def load_parser(model: str):
    """spaCy pipeline once per Python worker; NER is not needed for noun chunks (parser + tagger +
    lemmatizer are: noun_chunks read the dependency parse, lemmas fold plurals)."""
    with _LOCK:
        if model not in _NLP:
            import spacy

            _NLP[model] = spacy.load(model, disable=["ner"])
        return _NLP[model]


def _concrete(token) -> bool:
    lemma = token.lemma_.lower()
    return (token.pos_ == "NOUN" and token.is_alpha and len(lemma) >= 3 and not token.is_stop
            and lemma not in ABSTRACT_NOUNS and not lemma.endswith(ABSTRACT_SUFFIXES))


def chunk_phrases(doc, max_words: int) -> list[str]:
    """Distinct tag candidates of one parsed sentence: per noun chunk whose root is a concrete common noun,
    the root's lemma and (when present) its adjacent compound modifiers + root ("coffee cup")."""
    out: list[str] = []
    for chunk in doc.noun_chunks:
        root = chunk.root
        if not _concrete(root):
            continue
        out.append(root.lemma_.lower())
        compounds = []
        for token in reversed([t for t in chunk if t.i < root.i]):
            if token.dep_ != "compound" or token.head.i not in (root.i, *(c.i for c in compounds)) \
                    or not token.is_alpha or token.pos_ != "NOUN" or token.is_stop:
                break
            compounds.insert(0, token)
        if compounds and len(compounds) + 1 <= max_words:
            out.append(" ".join([t.text.lower() for t in compounds] + [root.lemma_.lower()]))
    return list(dict.fromkeys(out))


def noun_phrases(model: str, max_words: int, batch_size: int):
    """mapInPandas body: (sentence_id, text) -> (sentence_id, phrases)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        nlp = None
        for frame in batches:
            if frame.empty:
                continue
            nlp = nlp or load_parser(model)
            docs = nlp.pipe([str(t) for t in frame["text"]], batch_size=batch_size)
            yield pd.DataFrame({"sentence_id": frame["sentence_id"].to_numpy(),
                                "phrases": [chunk_phrases(d, max_words) for d in docs]})
    return run
