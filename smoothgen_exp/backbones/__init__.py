"""Pretrained networks shared by models, oracles and metrics: loading from local files (`hub`), the
MiniLM text encoder, CLIP, causal-LM loading, and their tiny random twins. This layer sits below
`models/`, `oracles/` and `metrics/` and imports none of them, so those never import each other to
share an encoder.
"""
