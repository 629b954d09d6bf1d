"""``python -m bone_age.predict CHECKPOINT INPUT --out preds.csv``: bone age of new studies.

INPUT is a manifest (``.csv``), a folder of DICOM files (indexed as ``python -m bone_age.index``
does, with its pseudonym key) or one DICOM file. One row per study: subject_id, sex, age
(chronological, where known), pred_age, pred_sd (empty for an MSE model) and age_gap
(pred_age - age). A study lacking a view the model needs is refused with its reason. ``--onnx``
runs an exported model instead of the checkpoint (give it in place of CHECKPOINT).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from bone_age.data.dicom import DicomReadError, read_dataset
from bone_age.data.manifest import read_manifest
from bone_age.utils.arguments import MAX_BATCH_SIZE, ArgumentParser, count
from bone_age.utils.console import plural
from bone_age.utils.console import progress as progress_display
from bone_age.utils.cores import usable_cores
from bone_age.utils.errors import EXIT_OK, EXIT_PARTIAL, BoneAgeError, command
from bone_age.utils.outputs import check_output_file, check_outside_scan_folders
from bone_age.utils.tables import write_csv

COLUMNS = ["subject_id", "sex", "age", "pred_age", "pred_sd", "age_gap"]


@dataclass
class Item:
    """One study to predict: pseudonym, labels where known, and the file of each view."""

    subject_id: str
    sex: str | None
    age: float | None
    files: dict[str, Path] = field(default_factory=dict)
    site: str = ""  # pseudonym, where known


@dataclass
class Refused:
    subject_id: str
    reason: str
    study: str = ""  # the study's pseudonym (ST-...), where a DICOM header gave one


NO_STUDY = "(no study)"  # a refused file whose header names no study (damaged, a broken link)
REFUSED_COLUMNS = ["subject_id", "study", "reason"]


def from_manifest(path: Path) -> tuple[list[Item], list[Refused]]:
    """Studies of a manifest; an empty sex is kept as unknown (``predict`` refuses it only for
    a model that takes sex as an input)."""
    studies, problems = read_manifest(path, sex_required=False)
    items = [Item(s.subject_id, s.sex or None, s.age,
                  {"anterior": s.anterior, "posterior": s.posterior}, s.site) for s in studies]
    return items, [Refused(p.subject_id or "(no subject_id)",
                           f"{p.source}, row {p.row}: {p.reason}") for p in problems]


def _pseudonymizer(key_file: Path, outputs: list[Path]):
    """The pseudonymiser of ``key_file``, refused inside the input's or the outputs' folders."""
    from bone_age.data.pseudonym import Pseudonymizer, check_secret_location, load_or_create_key

    return Pseudonymizer(load_or_create_key(check_secret_location(key_file, outputs, "key file")))


PATIENT_PATH = "<a file whose path names the patient>"
_WORK_DIRS: list[tempfile.TemporaryDirectory] = []  # folders of views cut out by the indexer


def _scrubber(folder: Path, paths: set[str]) -> Callable[[str], str]:
    """Replaces every path below ``folder`` that names a patient (as the indexer found) in a
    message by a placeholder: refusals are printed, and PACS exports name files after patients.
    """
    hidden = sorted({f for rel in paths for f in (str(folder / rel), str(folder.absolute() / rel),
                                                  rel)}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for path in hidden:
            text = text.replace(path, PATIENT_PATH)
        return text
    return scrub


def from_folder(
    folder: Path, key_file: Path, out: Path
) -> tuple[list[Item], list[Refused], Callable[[str], str]]:
    """Studies of a DICOM folder, grouped, labelled and pseudonymised by bone_age's indexer,
    and the scrubber that keeps the export's identifying paths out of messages."""
    from bone_age.data.index_result import WRITTEN
    from bone_age.data.index_studies import index_folder

    pseudo = _pseudonymizer(key_file, [out.resolve().parent, folder])
    # The indexer's manifest location: the manifest is not written, but the views it cuts out
    # of files (two-frame files without view codes) are, and are read until the process ends
    # (the folder is removed then, or when the last reference goes).
    work = tempfile.TemporaryDirectory(prefix="bone-age-views-")
    _WORK_DIRS.append(work)
    result = index_folder(folder, Path(work.name) / "manifest.csv", pseudo, check_pixels=False,
                          progress=True)
    items = [Item(s.subject_id, s.sex or None, s.age, dict(s.views), s.site)
             for s in result.studies if s.status in WRITTEN]
    # One refusal per study left out, named by its pseudonyms (never by a path, which may name
    # the patient); a file whose header gave no study is one refusal of its own.
    refused = [Refused(lo.subject_id or lo.study or NO_STUDY, lo.reason, lo.study)
               for lo in result.left_out]
    return items, refused, _scrubber(folder, result.patient_paths)


def from_file(path: Path, view: str | None, key_file: Path,
              out: Path) -> tuple[Item, Callable[[str], str]]:
    """One DICOM file, checked as the index checks a file (modality, image, view, whole-body
    shape and counts); its views from the headers, or ``view`` for an unnamed single frame.
    Also the scrubber that shows the subject's pseudonym where the file's path names them."""
    from bone_age.data.identifiers import PathChecker
    from bone_age.data.instances import single_file
    from bone_age.data.labels import study_age, study_sex, study_site

    header = read_dataset(path, pixels=False)
    patient = str(header.get("PatientID", "") or "")
    secret_free = [out.resolve().parent, path.resolve().parent]  # outputs and the export
    pseudo = _pseudonymizer(key_file, secret_free)
    sid = pseudo.subject(patient) if patient else "study-1"
    checker = PathChecker()
    checker.add(header)
    label = str(path)
    if checker.names_patient(path.absolute().as_posix()):
        label = f"<the input file of {sid}>"
    scrub = str if label == str(path) else _renamer(path, label)
    ds, views = single_file(path, label, view)
    age, _ = study_age(ds)
    item = Item(sid, study_sex(ds), age, dict.fromkeys(views, path), pseudo.site(study_site(ds)))
    return item, scrub


def _renamer(path: Path, label: str) -> Callable[[str], str]:
    """Replaces the path of a file that names its patient by ``label`` in a message."""
    forms = sorted({str(path), str(path.absolute()), str(path.resolve())}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for form in forms:
            text = text.replace(form, label)
        return text
    return scrub


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


@dataclass
class Predicted:
    """One study's prediction: age, SD (NaN where the loss gives none) and the network's raw
    outputs (None where the model file gives none)."""

    item: Item
    age: float
    sd: float
    outputs: np.ndarray | None


def predict_studies(predictor, items: list[Item], batch_size: int = 16,
                    progress: bool | None = None) -> tuple[list[Predicted], list[Refused]]:
    """Predictions, as the model gives them, and the studies refused (missing view,
    unreadable, no sex...)."""
    spec = predictor.spec
    done: list[Predicted] = []
    refused: list[Refused] = []
    batch: list[tuple[Item, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        counts = np.stack([c for _, c in batch]).astype(np.float32)
        sex = np.array([float(i.sex == "M") for i, _ in batch], dtype=np.float32)
        age, sd, outputs = predictor.run(counts, sex)
        for k, (item, _) in enumerate(batch):
            done.append(Predicted(item, age[k], sd[k], None if outputs is None else outputs[k]))
        batch.clear()

    usable = []
    for item in items:
        reason = _unusable(spec, item)
        if reason:
            refused.append(Refused(item.subject_id, reason))
        else:
            usable.append(item)
    show = len(items) >= 50 if progress is None else progress
    decoded = _decoded_ahead(spec, usable, lookahead=2 * batch_size if _spare_core() else 0)
    # tqdm on a terminal, a line every few seconds in a log (no carriage-return spam).
    for item, counts in progress_display(decoded, total=len(usable), desc="predicting",
                                         unit="studies", enabled=show):
        if isinstance(counts, DicomReadError):
            refused.append(Refused(item.subject_id, str(counts)))
            continue
        batch.append((item, counts))
        if len(batch) >= batch_size:
            flush()
    flush()
    return done, refused


def predict(predictor, items: list[Item], batch_size: int = 16,
            progress: bool | None = None) -> tuple[list[dict], list[Refused]]:
    """Rows of predictions (``COLUMNS``, rounded for reading) and the studies refused."""
    done, refused = predict_studies(predictor, items, batch_size, progress)
    rows = [{"subject_id": p.item.subject_id, "sex": p.item.sex or "",
             "age": "" if p.item.age is None else f"{p.item.age:g}",
             "pred_age": _fmt(p.age), "pred_sd": _fmt(p.sd),
             "age_gap": "" if p.item.age is None else _fmt(p.age - p.item.age)} for p in done]
    return rows, refused


def _unusable(spec, item: Item) -> str | None:
    """Why the model cannot take this study, from the manifest/headers alone."""
    missing = [v for v in spec.views if v not in item.files]
    if missing:
        have = " + ".join(item.files) or "no view"
        return f"the model needs the {' + '.join(spec.views)} view(s) but the study has {have}"
    if spec.use_sex and item.sex not in ("F", "M"):
        return "the model uses sex as an input and the study's sex is unknown"
    return None


def _spare_core() -> bool:
    """True when torch's threads leave a core free for decoding alongside the model."""
    return torch.get_num_threads() < usable_cores()


def _decoded_ahead(spec, items: list[Item], lookahead: int
                   ) -> Iterator[tuple[Item, np.ndarray | DicomReadError]]:
    """Each item with its count images (or why they cannot be read), in order.

    With ``lookahead`` > 0 a background thread (one torch thread) decodes up to that many
    studies ahead of the model, so reading DICOM overlaps with the forward passes. Only worth it
    with a spare core: when the model's threads fill every core, the extra thread makes OpenMP
    wait and the whole is slower than decoding in turn (measured in experiments/bench). A few
    lines instead of a DataLoader: no worker start-up cost, and errors stay per study.
    """
    def counts_or_error(item: Item) -> np.ndarray | DicomReadError:
        try:
            return spec.counts(item.files)
        except DicomReadError as err:
            return err

    if lookahead <= 0:
        for item in items:
            yield item, counts_or_error(item)
        return
    with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        queue: deque = deque()
        pending = iter(items)
        for item in islice(pending, lookahead):
            queue.append((item, pool.submit(counts_or_error, item)))
        while queue:
            item, future = queue.popleft()
            if (following := next(pending, None)) is not None:
                queue.append((following, pool.submit(counts_or_error, following)))
            yield item, future.result()


def write_rows(rows: list[dict], out: Path) -> None:
    """The predictions CSV, written whole or not at all, its cells safe in a spreadsheet."""
    write_csv(out, COLUMNS, rows)


def add_model_and_input(p: argparse.ArgumentParser, input_name: str = "input") -> None:
    """The arguments predict and evaluate share: MODEL, the studies, --onnx, --view,
    --batch-size and --key-file. Call ``model_and_input`` on the parsed namespace."""
    from bone_age.data.pseudonym import DEFAULT_KEY_FILE

    p.add_argument("model", type=Path, help="a run's checkpoints/*.ckpt (or .onnx with --onnx)")
    p.add_argument(input_name, type=Path, help="a manifest .csv, a DICOM folder or a DICOM file")
    p.add_argument("--onnx", action="store_true", help="MODEL is an exported ONNX model")
    p.add_argument("--view", choices=["anterior", "posterior"],
                   help="the view of a single-frame file whose headers do not name it")
    p.add_argument("--batch-size", type=count(MAX_BATCH_SIZE), default=16)
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE,
                   help="pseudonym key for DICOM input, as python -m bone_age.index uses")


def model_and_input(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``onnx`` set for a MODEL named ``*.onnx``."""
    args.onnx = args.onnx or args.model.suffix == ".onnx"
    return args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m bone_age.predict",
                                description=__doc__.splitlines()[0])
    add_model_and_input(p)
    p.add_argument("--out", type=Path, default=Path("predictions.csv"))
    return model_and_input(p.parse_args(argv))


def load_predictor(model: Path, onnx: bool):
    """The predictor of a checkpoint, or of an exported ONNX model with ``onnx``."""
    from bone_age.inference.predictor import OnnxPredictor, TorchPredictor

    return OnnxPredictor(model) if onnx else TorchPredictor(model)


def read_input(
    source: Path, view: str | None, key_file: Path, out: Path
) -> tuple[list[Item], list[Refused], Callable[[str], str]]:
    """The studies of INPUT (a manifest, a DICOM folder or one DICOM file), those refused
    already, and the scrubber that keeps an export's identifying paths out of messages.

    Args:
        source: the input path.
        view: the view of a single-frame file whose headers do not name it.
        key_file: the pseudonym key for DICOM input.
        out: the command's output (the key must not lie beside it).
    """
    if source.is_dir():
        return from_folder(source, key_file, out)
    if source.suffix.lower() == ".csv":
        return (*from_manifest(source), str)
    item, scrub = from_file(source, view, key_file, out)
    return [item], [], scrub


def check_outside_inputs(out: Path, what: str, source: Path,
                         items: Sequence[Item] = ()) -> None:
    """OutputError when ``out`` lies in the folder of a DICOM file the command reads: INPUT
    when it is one file (checked before any work), every study's files once they are known.
    A folder given whole is an input folder already (``check_not_input``)."""
    files = [f for item in items for f in item.files.values()]
    if not source.is_dir() and source.suffix.lower() != ".csv":
        files.append(source)
    check_outside_scan_folders(out, what, files)


class NothingPredicted(BoneAgeError):
    """No study of the input could be predicted (the reasons are in the file it names)."""


def refusals_file(out: Path) -> Path:
    """Where a command that predicted nothing lists its refused studies: beside its output."""
    return out.with_name(f"{out.name}.refused.csv")


def nothing_predicted(source: Path, refused: list[Refused], scrub: Callable[[str], str],
                      out: Path) -> NothingPredicted:
    """The one line a command ends with when no study could be predicted; the per-study
    reasons go to ``refusals_file(out)`` (subject_id, reason), never a line each."""
    if not refused:
        return NothingPredicted(f"{source}: no study found in it, nothing predicted")
    first = scrub(f"{refused[0].subject_id}: {refused[0].reason}")
    return NothingPredicted(f"{source}: no study could be predicted: {len(refused)} refused "
                            f"(first {first}); {write_refusals(refused, scrub, out)}")


def write_refusals(refused: list[Refused], scrub: Callable[[str], str], out: Path) -> str:
    """List the refused studies (subject_id, study, reason) in ``refusals_file(out)``, and
    return the words that point to it. Without refusals an earlier run's listing is emptied
    (header only), never left to describe this run."""
    listing = refusals_file(out)
    if not refused and not listing.is_file():
        return ""
    try:
        write_csv(listing, REFUSED_COLUMNS,
                  [[scrub(r.subject_id), r.study, scrub(r.reason)] for r in refused])
        return f"every reason in {listing}"
    except OSError as err:
        return f"the reasons could not be written to {listing} ({err.strerror})"


@command("predict")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_output_file(args.out, "predictions", [args.model, args.input], [args.input])
    check_outside_inputs(args.out, "predictions", args.input)
    predictor = load_predictor(args.model, args.onnx)
    items, refused, scrub = read_input(args.input, args.view, args.key_file, args.out)
    check_outside_inputs(args.out, "predictions", args.input, items)  # a manifest's scans
    rows, more = predict(predictor, items, args.batch_size)
    refused += more
    if not rows:  # one line; the reasons go to a file
        raise nothing_predicted(args.input, refused, scrub, args.out)
    write_rows(rows, args.out)
    listed = write_refusals(refused, scrub, args.out)  # a line each would flood the terminal
    print(f"{plural(len(rows), 'study')} predicted, {len(refused)} refused -> {args.out}"
          + (f" ({listed})" if refused else ""))
    return EXIT_PARTIAL if refused else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
