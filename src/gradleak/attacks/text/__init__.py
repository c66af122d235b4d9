"""Closed-form attacks on text models: what the embedding and attention gradients of a
BERT-family encoder give away without any optimisation.

`tokens` reads the set of tokens in the client's batch from the rows of the word-embedding
update; `span` (DAGER-style) tests every (token, position) against the span of the first
attention layer's inputs and assembles the sequences with a second, context-dependent span.
"""
