"""Evaluation: how good a model is, on one scale for every tokenizer.

- ``scoring``: log-likelihoods of continuations, batched (the one measurement), and the model
  interface (the lab's GPT, a Hugging Face causal LM);
- ``text`` (bits per byte), ``multiple_choice`` (acc, acc_norm as the lm-evaluation-harness),
  ``cloze`` (last-word accuracy); ``baselines`` (a unigram model);
- ``heldout`` (the standard-library modules kept for evaluation) and ``builtin`` (the offline
  tasks made from them); ``tasks`` (tasks by name or file) and ``report`` (results.json, report.md);
- ``export`` (a complete HF folder),
  ``harness`` (the lm-evaluation-harness over a lab model; optional extra ``eval``);
- ``word_vectors``: similarity and analogies for CBoW's vectors.
"""
