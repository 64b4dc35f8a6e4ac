"""The rows of ``tools/benchmark/accuracy.py``'s ``accuracy.json`` files, pooled over several files.

``tools/analysis/plot_accuracy.py`` (rows by variant) and ``tools/misc/model_zoo.py`` (rows by config) read the
runs of several files as one set: a key (variant or config) and seed met again counts once, the later file's row
replacing the earlier one; a row without a seed (a file older than the benchmark's ``--seeds``, most likely one of
the seeded runs, reused) is left out when its key has seeded rows.
"""
import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple


def pool_rows(paths: Sequence[str], key: Callable[[dict], object],
              annotate: Optional[Callable[[dict, str], dict]] = None,
              keep: Optional[Callable[[dict, str], bool]] = None, log: Callable[[str], None] = print) -> List[dict]:
    """The rows of the files ``paths``, one per ``(key(row), seed)``, each with ``_file`` and the entries of
    ``annotate(file's data, path)``; ``keep(row, path)`` false leaves a row out before the pooling (a failed run
    then does not replace an earlier good one). ``log`` gets a note per replaced or left-out row."""
    rows: Dict[Tuple[object, object], dict] = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        extra = annotate(data, path) if annotate is not None else {}
        for row in data.get('variants', []):
            if keep is not None and not keep(row, path):
                continue
            row = dict(row, _file=path, **extra)
            k = (key(row), row.get('seed'))
            if k in rows:
                log(f'note: {row.get("name")} (seed {k[1]}) of {rows[k]["_file"]} replaced by the row of {path}')
                del rows[k]
            rows[k] = row
    seeded = {k for k, seed in rows if seed is not None}
    for k, seed in list(rows):
        if seed is None and k in seeded:
            log(f'note: the row of {k} without a seed ({rows[k, seed]["_file"]}) is left out beside its seeded rows')
            del rows[k, seed]
    return list(rows.values())
