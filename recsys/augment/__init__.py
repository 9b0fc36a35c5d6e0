"""Augmenting sparse feedback: perturbed graph views for contrastive learning (SGL, SimGCL),
text side information, LLM-named triples (LLMRec).

Heavy packages (sentence-transformers, openai) are imported inside the functions that use
them: install the `[text]` and `[llm]` extras for these modules.
"""
