"""Numbers that must hold together in an honest ``metrics.json``, checked without rerunning anything: a test
accuracy is k/N of the test set's size; a confusion matrix's rows sum to the class counts, its trace over its
total is the accuracy, the per-class accuracies and the classification report follow from it; means and spreads
follow from the per-seed values; the best configuration is the one its table ranks first; timings are plausible.

An edited number rarely keeps all of these: a test accuracy raised by half a point is no longer k/200, a confusion
matrix made up by hand rarely sums to 20 per row with the right trace. Each function returns the problems found
(empty when the numbers hold together).
"""

from __future__ import annotations

import math

TOL = 1e-6  # float32 accuracies written as float64 differ from k/N by ~1e-8


def _num(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def test_records(metrics: dict) -> list[tuple[str, dict]]:
    """Every test evaluation of a report: (where, the dict holding ``accuracy`` and perhaps a confusion matrix)."""
    found = []
    best = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
    if isinstance(best.get("test"), dict):
        found.append(("best.test", best["test"]))
    return found


def accuracy_problems(metrics: dict) -> list[str]:
    """Each test accuracy must be k/N for the recorded test-set size N."""
    n = _num(((metrics.get("data") or {}).get("sizes") or {}).get("test"))
    problems = []
    for where, test in test_records(metrics):
        acc = _num(test.get("accuracy"))
        if acc is None:
            problems.append(f"{where}.accuracy is not a number")
            continue
        if not n:
            problems.append("data.sizes.test is not recorded: the accuracy cannot be checked against the test size")
            continue
        k = acc * n
        if abs(k - round(k)) > TOL * n or not 0 <= acc <= 1:
            problems.append(f"{where}.accuracy {acc!r} is no count out of the {n:.0f} test images "
                            f"({k:.3f} correct): the number was not computed by the run")
    return problems


def _matrix(test: dict) -> list[list[float]] | None:
    cm = test.get("confusion_matrix")
    if not isinstance(cm, list) or not cm or not all(isinstance(r, list) and len(r) == len(cm) for r in cm):
        return None
    rows = [[_num(v) for v in r] for r in cm]
    return None if any(v is None or v < 0 or v != int(v) for r in rows for v in r) else rows


def class_names(metrics: dict, size: int) -> list[str]:
    """The names of the confusion matrix's rows: the kept classes' names, in order."""
    data = metrics.get("data") or {}
    names, kept = data.get("class_names") or [], data.get("classes")
    if isinstance(kept, list) and len(kept) == size and all(isinstance(k, int) and 0 <= k < len(names) for k in kept):
        return [str(names[k]) for k in kept]
    return [str(n) for n in names[:size]] if len(names) >= size else [str(i) for i in range(size)]


def confusion_problems(metrics: dict) -> list[str]:
    """The confusion matrix against the test size, the class counts, the accuracy, the per-class accuracies and
    the classification report."""
    problems = []
    n = _num(((metrics.get("data") or {}).get("sizes") or {}).get("test"))
    for where, test in test_records(metrics):
        if "confusion_matrix" not in test:
            continue
        cm = _matrix(test)
        if cm is None:
            problems.append(f"{where}.confusion_matrix is not a square matrix of counts")
            continue
        total, trace = sum(map(sum, cm)), sum(cm[i][i] for i in range(len(cm)))
        names = class_names(metrics, len(cm))
        report = test.get("classification_report") if isinstance(test.get("classification_report"), dict) else {}
        if n and total != n:
            problems.append(f"{where}.confusion_matrix counts {total:.0f} images; the test set has {n:.0f}")
        acc = _num(test.get("accuracy"))
        if acc is not None and total and abs(trace / total - acc) > TOL:
            problems.append(f"{where}.confusion_matrix: trace/total = {trace:.0f}/{total:.0f} = {trace / total:.4%}; "
                            f"the reported accuracy is {acc:.4%}")
        problems += _class_rows(where, cm, names, report, test.get("per_class_accuracy"))
    return problems


def _class_rows(where: str, cm: list, names: list[str], report: dict, per_class) -> list[str]:
    problems = []
    columns = [sum(r[j] for r in cm) for j in range(len(cm))]
    for i, name in enumerate(names):
        support, correct = sum(cm[i]), cm[i][i]
        row = report.get(name) if isinstance(report.get(name), dict) else None
        if row is not None and _num(row.get("support")) is not None and row["support"] != support:
            problems.append(f"{where}: row {name!r} of the confusion matrix sums to {support:.0f}; the "
                            f"classification report's support is {row['support']}")
        recall = correct / support if support else 0.0
        if row is not None and _num(row.get("recall")) is not None and abs(row["recall"] - recall) > TOL:
            problems.append(f"{where}: {name!r} recall {row['recall']:.4f}; the confusion matrix gives "
                            f"{correct:.0f}/{support:.0f} = {recall:.4f}")
        precision = correct / columns[i] if columns[i] else 0.0
        if row is not None and _num(row.get("precision")) is not None and abs(row["precision"] - precision) > TOL:
            problems.append(f"{where}: {name!r} precision {row['precision']:.4f}; the confusion matrix gives "
                            f"{correct:.0f}/{columns[i]:.0f} = {precision:.4f}")
        if isinstance(per_class, dict) and _num(per_class.get(name)) is not None \
                and abs(per_class[name] - recall) > TOL:
            problems.append(f"{where}.per_class_accuracy[{name!r}] = {per_class[name]:.4f}; the confusion matrix "
                            f"gives {correct:.0f}/{support:.0f} = {recall:.4f}")
    return problems[:12]


def configuration_lists(metrics: dict) -> list[tuple[str, list[dict]]]:
    """Every table of configurations a report records: (where, records)."""
    found = []
    if isinstance(metrics.get("configurations"), list):
        found.append(("configurations", metrics["configurations"]))
    for key, value in metrics.items():
        if isinstance(value, dict) and isinstance(value.get("configurations"), list):
            found.append((f"{key}.configurations", value["configurations"]))
    return [(w, [r for r in rs if isinstance(r, dict)]) for w, rs in found]


def _value(record: dict, key: str) -> float | None:
    return _num(record.get(key, record.get(f"{key}_mean")))


def ranking_key(record: dict) -> tuple:
    """How the toolkit ranks configurations: highest validation accuracy, then lowest validation loss."""
    acc, loss = _value(record, "val_acc"), _value(record, "val_loss")
    return (-(acc if acc is not None else -math.inf), loss if loss is not None else math.inf)


def best_problems(metrics: dict) -> list[str]:
    """``best.name`` must be the configuration its table ranks first (the table it comes from)."""
    best = metrics.get("best") if isinstance(metrics.get("best"), dict) else {}
    name = best.get("name")
    if not name:
        return []
    for where, records in configuration_lists(metrics):
        if any(r.get("name") == name for r in records):
            done = [r for r in records if r.get("status", "completed") == "completed" and _value(r, "val_acc") is not None]
            top = min(done, key=ranking_key, default=None)  # min is stable: ties go to the earlier one, as in the toolkit
            if top is not None and top.get("name") != name:
                return [f"best.name is {name!r}, but {where} ranks {top.get('name')!r} first (validation accuracy "
                        f"{_value(top, 'val_acc'):.4f} against {_value(_named(records, name), 'val_acc') or 0:.4f})"]
            return []
    return [f"best.name {str(name)[:60]!r} is no configuration of the report's tables"]


def _named(records: list[dict], name: str) -> dict:
    return next((r for r in records if r.get("name") == name), {})


def spread_problems(metrics: dict) -> list[str]:
    """Means and standard deviations against the per-seed values, where a record keeps them (``runs``: one
    record per seed); the mean within the per-seed values' range otherwise."""
    problems = []
    for where, records in configuration_lists(metrics):
        for r in records:
            for key in [k[:-5] for k in r if k.endswith("_mean")]:
                mean, std = _num(r.get(f"{key}_mean")), _num(r.get(f"{key}_std"))
                seeds = [_num(run.get(key)) for run in r.get("runs") or [] if isinstance(run, dict)]
                seeds = [s for s in seeds if s is not None]
                if mean is None or len(seeds) < 2:
                    continue
                m = sum(seeds) / len(seeds)
                s = math.sqrt(sum((x - m) ** 2 for x in seeds) / (len(seeds) - 1))
                if abs(m - mean) > TOL * max(1, abs(m)) or (std is not None and abs(s - std) > 1e-4 * max(1, s)):
                    problems.append(f"{where} {r.get('name')!r}: {key} {mean:.4f} ± {std or 0:.4f}; its "
                                    f"{len(seeds)} seeds give {m:.4f} ± {s:.4f}")
    return problems


def timing_problems(metrics: dict) -> list[str]:
    """Timings a run could have recorded: finite, not negative, the configurations' seconds within the report's
    wall time (when nothing came from the cache), the latency and throughput of one model consistent."""
    problems = []
    wall = _num(metrics.get("wall_seconds"))
    cache = metrics.get("cache") if isinstance(metrics.get("cache"), dict) else {}
    spent = 0.0
    for where, records in configuration_lists(metrics):
        for r in records:
            sec = r.get("seconds", r.get("seconds_mean"))
            if sec is not None and (_num(sec) is None or sec < 0):
                problems.append(f"{where} {r.get('name')!r}: seconds {sec!r} is not a duration")
            elif sec is not None:
                spent += sec * (r.get("repeats") or 1)
    if wall is not None and not cache.get("runs_from_cache") and spent > 1.05 * wall + 1:
        problems.append(f"the configurations took {spent:.1f} s in all, more than the report's wall time "
                        f"{wall:.1f} s")
    latency = (metrics.get("best") or {}).get("latency") if isinstance(metrics.get("best"), dict) else None
    if isinstance(latency, dict):
        ms = _num(latency.get("ms_per_image_batch1"))
        if ms is not None and ms <= 0:
            problems.append(f"best.latency.ms_per_image_batch1 = {ms!r}: no model answers in no time")
    return problems


def arithmetic_problems(metrics: dict) -> list[str]:
    """All of this module's checks of one report."""
    return (accuracy_problems(metrics) + confusion_problems(metrics) + best_problems(metrics)
            + spread_problems(metrics))
