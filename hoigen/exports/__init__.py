"""hoigen exports: consumers of hoigen shards that write the layouts pose estimators read (SPEC §9).

- :mod:`hoigen.exports.nocs` — NOCS CAMERA layout with SPD's labels, pickles and lists (``hoigen export nocs``).
- :mod:`hoigen.exports.coco` — COCO instances + hand keypoints (``hoigen export coco``).
- :mod:`hoigen.exports.bop` — BOP scenes and models (``hoigen export bop``).
- :mod:`hoigen.exports.nocs_augment` — HOI frames for NOCS CAMERA frames, mixed lists (``hoigen nocs-augment``).

Exports read shards (and the canonical meshes stored next to them) through :mod:`hoigen.datasets`; they never
import the synthesis recipe. Importing this package is cheap: each exporter imports its dependencies when it runs.
"""
