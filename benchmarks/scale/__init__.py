"""The paper's scale on this machine: WMT-size parallel corpora built from Multi30k, in the formats users bring.

    python -m benchmarks.scale.corpus --pairs 1000000 --output /tmp/scale-1m     a corpus (never committed)

Modules: `corpus` (the synthetic corpus builder).
"""
