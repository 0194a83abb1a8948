"""ONNX files as source models: the graph's own inputs, reference outputs from ONNX Runtime (fp32, CPU execution
provider), and the file pinned in the run directory together with its external data."""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np

from deploycmp.core.errors import UsageError, first_line
from deploycmp.core.specs import ONNX_TYPES



def imports(record: dict) -> tuple[str, ...]:
    """What an export worker imports to rebuild this source (sources.base.OPTIONAL)."""
    return ("onnx",)

MAIN_FILE = "model.onnx"
_threads = 0  # ONNX Runtime's default (every core) until set_threads


class OnnxModel:
    """An ONNX file (its external data beside it) and, once something runs it, an ONNX Runtime session on it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._session = None

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = _threads
            opts.log_severity_level = 3  # its warnings (unused initializers ...) are not the user's business here
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        return self._session

    def run(self, feed: dict) -> dict:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))

    def data_files(self) -> list[str]:
        """The external data files the graph refers to, relative to its folder."""
        import onnx

        return external_data(onnx.load(str(self.path), load_external_data=False))

    def copy_to(self, folder: Path, name: str = MAIN_FILE) -> Path:
        """The file and its external data copied into `folder` (the data keeps its names: the graph refers to them)."""
        folder.mkdir(parents=True, exist_ok=True)
        for rel in self.data_files():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path.parent / rel, folder / rel)
        shutil.copyfile(self.path, folder / name)
        return folder / name


def default_opset(model) -> int | None:
    """The model's opset of the default (ai.onnx) domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _tensors(graph):
    """Every tensor a graph holds: initializers and node attributes, subgraphs (If, Loop, Scan) included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def _external_entries(model) -> list[dict]:
    """The external data entries of every tensor kept outside the graph: location, offset, length."""
    import onnx

    return [{e.key: e.value for e in t.external_data} for t in _tensors(model.graph)
            if t.data_location == onnx.TensorProto.EXTERNAL]


def external_data(model) -> list[str]:
    return sorted({e["location"] for e in _external_entries(model) if "location" in e})


def _check_external_data(spec: str, path: Path, graph) -> None:
    """Every external data file is there, long enough for the tensors it holds, and inside the model's folder (the
    run directory keeps a copy of each: a link must not reach outside it, as for SavedModel directories)."""
    inside = path.parent.resolve()
    needed: dict[str, int] = {}
    for e in _external_entries(graph):
        loc = e.get("location", "")
        end = int(e.get("offset", 0)) + int(e.get("length", 0))
        needed[loc] = max(needed.get(loc, 0), end)
    for loc, end in sorted(needed.items()):
        p = path.parent / loc
        if not loc or Path(loc).is_absolute() or ".." in Path(loc).parts:
            raise UsageError(f"--model {spec}: its external data {loc!r} lies outside the model's folder; keep the "
                             "data files beside the .onnx file")
        if not p.is_file():
            raise UsageError(f"--model {spec}: its external data file {loc} is missing (expected at {p}); copy it "
                             "together with the .onnx file")
        if p.is_symlink() and not p.resolve().is_relative_to(inside):
            raise UsageError(f"--model {spec}: its external data {loc} is a link to {p.resolve()}, outside the "
                             "model's folder; copy the file into the folder instead")
        if p.stat().st_size < end:
            raise UsageError(f"--model {spec}: its external data file {loc} holds {p.stat().st_size} bytes, the graph "
                             f"refers to {end}: a truncated or other file")


def _ort_message(e: Exception) -> str:
    """An error's first line without ONNX Runtime's status prefix and source locations."""
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(e, limit=None))
    return re.sub(r"/\S+\.(cc|h|cpp):\d+ \S+ ", "", text)[:200]


def _open(spec: str) -> tuple[object, OnnxModel]:
    """The graph (weights not loaded) and the model with its ONNX Runtime session, or one line saying why not."""
    import onnx

    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"model file not found: {spec}")
    try:
        graph = onnx.load(str(path), load_external_data=False)
        if not graph.graph.output:  # protobuf parses many a byte string as some message
            raise ValueError("no graph with outputs in it")
    except Exception as e:  # protobuf's DecodeError ...
        raise UsageError(f"--model {spec} could not be read as an ONNX file ({_ort_message(e)}): not a model deploycmp "
                         "can export from") from e
    _check_external_data(spec, path, graph)
    model = OnnxModel(path)
    try:
        model.session
    except Exception as e:  # a truncated data file, an operator ONNX Runtime lacks ...
        raise UsageError(f"--model {spec}: ONNX Runtime could not load it: {_ort_message(e)}") from e
    return graph, model


def build(spec: str, weights: str, given: list, seed: int = 0, num_classes: int | None = None, layout: str | None = None,
          value_ranges: dict | None = None, task: str | None = None):
    """Open the user's ONNX file. `given`: input specs from --input/--input-shape (may be empty): they replace the
    graph's own inputs of the same name. Returns (model, record for the manifest, warnings)."""
    if weights != "auto":
        raise UsageError(f"--weights {weights} does not apply to an ONNX file ({spec} carries its own weights)")
    if num_classes is not None:
        raise UsageError("--num-classes applies to torchvision models; an ONNX file brings its own head")
    if task is not None:
        raise UsageError("--task applies to Hugging Face and KerasHub models, not to an ONNX file")
    graph, model = _open(spec)
    opset = default_opset(graph)
    record = {"framework": "onnx", "kind": "onnx-file", "spec": spec, "name": Path(spec).stem, "weights": "file",
              "onnx": {"opset": opset, "ir_version": graph.ir_version, "producer": f"{graph.producer_name} "
                       f"{graph.producer_version}".strip(), "external_data": external_data(graph)}}
    warnings: list[str] = []
    model, changed = _fit_fixed_sizes(spec, graph, model, list(given or []))
    if changed:
        record["onnx"]["input_sizes_set"] = changed
        warnings.extend(f"input {name}: the file fixes {was}; deploycmp set it to {now} as --input gives (the outputs' "
                        "sizes inferred again)" for name, (was, now) in changed.items())
    record["inputs"] = describe_inputs(model.session.get_inputs(), list(given or []), spec, layout, value_ranges or {},
                                       _vocab_sizes(graph), warnings, seed)
    return model, record, warnings


def _shown(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else d if isinstance(d, str) and d else "?"
                           for d in shape) + "]"


def _fit_fixed_sizes(spec: str, graph, model: OnnxModel, given: list) -> tuple[OnnxModel, dict]:
    """The file's fixed input sizes where --input gives others (a face detector exported at a fixed batch of 10 and
    32x32, whose own package frees its sizes before it runs it), set to what --input gives and the outputs' sizes
    inferred again, in a copy that the run pins as its source; a fixed batch other than 1 with no --input is
    refused with the --input to give (the source runs one sample per call). Returns (model, name -> (was, now))."""
    from deploycmp.core.specs import BATCH

    by_name = {g.name: g for g in given if g.name and not g.is_constant()}
    wanted = {}
    for i in model.session.get_inputs():
        fixed = [isinstance(d, int) and d > 0 for d in i.shape]
        free = [axis for axis, f in enumerate(fixed) if not f]
        if i.shape and fixed[0] and i.shape[0] != 1 and free:  # e.g. a recurrent state [layers, batch, hidden]
            raise UsageError(f"--model {spec}: input {i.name} {_shown(i.shape)} has axis 0 fixed at {i.shape[0]} and "
                             f"axis {free[0]} free, so its batch is likely axis {free[0]}: deploycmp feeds the batch "
                             "on axis 0 only (a batch axis elsewhere is not supported)")
        g = by_name.get(i.name)
        if g is None and i.shape and fixed[0] and i.shape[0] != 1:
            rest = ",".join(str(d) for d in i.shape[1:])
            raise UsageError(f"--model {spec}: input {i.name} has a fixed batch of {i.shape[0]} {_shown(i.shape)}, "
                             "and deploycmp runs the source one sample per call: give --input "
                             f"{i.name}:{ONNX_TYPES.get(i.type, 'float32')}:1,{rest} to set it free")
        if g is not None and len(g.shape) == len(i.shape) and any(
                f and ((axis == 0 and g.shape[0] == BATCH and have != 1) or (isinstance(want, int) and want != have))
                for axis, (f, have, want) in enumerate(zip(fixed, i.shape, g.shape))):
            wanted[i.name] = (_shown(i.shape), g.shape)
    if not wanted:
        return model, {}
    return _with_sizes(spec, graph, model, wanted)


def _with_sizes(spec: str, graph, model: OnnxModel, wanted: dict) -> tuple[OnnxModel, dict]:
    """A copy of the file (removed when this process ends, after the run has pinned it) with the input sizes
    `wanted` (name -> (as the file says, the shape to set)) and its outputs' sizes inferred again."""
    import atexit
    import tempfile

    import onnx

    if external_data(graph):
        raise UsageError(f"--model {spec}: --input sets sizes the file fixes; deploycmp rewrites only a file without "
                         "external data (export it with the sizes you want)")
    full = onnx.load(str(model.path))
    for graph_input in full.graph.input:
        if graph_input.name in wanted:
            for dim, want in zip(graph_input.type.tensor_type.shape.dim, wanted[graph_input.name][1]):
                dim.Clear()
                if isinstance(want, int):
                    dim.dim_value = want
                else:
                    dim.dim_param = want
    for output in full.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.Clear()
    del full.graph.value_info[:]  # the sizes inferred from the fixed ones
    try:
        full = onnx.shape_inference.infer_shapes(full)
    except Exception:  # ONNX Runtime infers them at load anyway
        pass
    folder = Path(tempfile.mkdtemp(prefix="deploycmp-onnx-"))
    atexit.register(shutil.rmtree, folder, True)
    onnx.save(full, str(folder / MAIN_FILE))
    resized = OnnxModel(folder / MAIN_FILE)
    try:
        resized.session
    except Exception as e:
        raise UsageError(f"--model {spec}: with the sizes --input gives, ONNX Runtime could not load it: "
                         f"{_ort_message(e)}") from e
    return resized, {name: (was, _shown(now)) for name, (was, now) in wanted.items()}


def _dim_name(text: str) -> str:
    """A symbolic ONNX dimension ('seq_len', 'unk__12', 'N*2') as a dimension name --shape can give."""
    name = re.sub(r"\W", "_", text)
    return name if name[:1].isalpha() else f"d_{name}"


def own_inputs(ort_inputs, spec: str) -> list:
    """The graph's inputs as specs: axis 0 is the batch (and so is its symbolic name wherever it appears), other
    symbolic dimensions keep their names, unnamed free ones become NAME_dimAXIS."""
    from deploycmp.core.specs import BATCH, DTYPES, InputSpec, with_batch

    batch_names = {i.shape[0] for i in ort_inputs if i.shape and isinstance(i.shape[0], str)}
    own = []
    for i in ort_inputs:
        dtype = ONNX_TYPES.get(i.type)
        if dtype not in DTYPES:
            raise UsageError(f"--model {spec}: input {i.name} is {i.type}, which deploycmp does not feed (it feeds "
                             f"{', '.join(sorted(DTYPES))})")
        shape = []
        for axis, d in enumerate(i.shape):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif isinstance(d, str) and d:
                shape.append(BATCH if d in batch_names else _dim_name(d))
            else:
                shape.append(BATCH if axis == 0 else f"{i.name}_dim{axis}")
        own.append(InputSpec(i.name, dtype, with_batch(shape)))
    return own


def _image_layout(shape: list, layout: str | None) -> str:
    if layout:
        return layout
    channels = (1, 3, 4)
    return "NHWC" if shape[3] in channels and shape[1] not in channels else "NCHW"


def describe_inputs(ort_inputs, given: list, spec: str, layout: str | None, ranges: dict, vocab: dict,
                    warnings: list | None = None, seed: int = 0) -> list[dict]:
    """The graph's inputs, each replaced by the --input (or --const) of the same name; --input-shape gives a
    single-input graph its shape. Integer inputs that index an embedding table take its size as their value range;
    a 0-d input takes one value for every call (its --const)."""
    from deploycmp.core.specs import (FLOAT_DTYPES, InputSpec, apply_ranges, check_ranges, fix_scalars, over_own,
                                      to_dicts)

    own = own_inputs(ort_inputs, spec)
    nameless = [g for g in given if not g.name]
    if nameless:
        varying = [o for o in own if o.name not in {g.name for g in given if g.is_constant()}]
        if len(varying) != 1:
            raise UsageError(f"--input-shape gives one input; {spec} takes {', '.join(o.name for o in own)}: give "
                             "each with --input NAME:DTYPE:SHAPE")
        given = [InputSpec(varying[0].name, varying[0].dtype, nameless[0].shape) if not g.name else g for g in given]
    specs = over_own(own, given, spec)
    for s in specs:
        if s.layout is None and s.dtype in FLOAT_DTYPES and len(s.shape) == 4:
            s.layout = _image_layout(s.shape, layout)
        if s.value_range is None and s.name in vocab and not s.is_mask():
            s.value_range = [0, vocab[s.name]]
    apply_ranges(specs, ranges)
    check_ranges(specs)
    said = fix_scalars(specs, seed)
    if warnings is not None:
        warnings.extend(said)
    return to_dicts(specs)


def _vocab_sizes(graph) -> dict[str, int]:
    """Integer graph inputs that index a constant table (Gather on an initializer, possibly after a Cast): the
    table's size, the range of values the input takes (token ids in [0, vocab))."""
    tables = {t.name: t.dims[0] for t in graph.graph.initializer if t.dims}
    inputs = {i.name for i in graph.graph.input}
    cast = {n.output[0]: n.input[0] for n in graph.graph.node if n.op_type == "Cast" and n.input[0] in inputs}
    out = {}
    for n in graph.graph.node:
        if n.op_type == "Gather" and len(n.input) == 2 and n.input[0] in tables:
            name = cast.get(n.input[1], n.input[1])
            if name in inputs:
                out[name] = min(out.get(name, tables[n.input[0]]), tables[n.input[0]])
    return out


def condition(model: OnnxModel, record: dict, calibration: dict, inputs: list) -> None:
    """An ONNX file brings its own weights (build refuses --weights other than auto): nothing to condition."""


def save_source(model: OnnxModel, record: dict, folder: Path) -> str:
    """Pin the file (and its external data) in the run directory; returns the file name."""
    model.copy_to(folder)
    return MAIN_FILE


def weights_sha256(model: OnnxModel, record: dict) -> str:
    """A digest of the file and of every external data file it refers to."""
    from deploycmp.core.rundir import sha256_file

    h = hashlib.sha256(f"{MAIN_FILE}:{sha256_file(model.path)}".encode())
    for rel in model.data_files():
        h.update(f"{rel}:{sha256_file(model.path.parent / rel)}".encode())
    return h.hexdigest()


def load_source(run_dir: Path, record: dict, source_file: str) -> OnnxModel:
    return OnnxModel(Path(run_dir) / source_file)


def example(feed: dict, inputs: list) -> dict:
    """A feed as ONNX Runtime takes it: by name, each array of its spec's dtype; a 0-d input as its one value (the
    spec's; the feed holds it once per sample)."""
    from deploycmp.core.specs import numpy_dtype

    def one(s):
        if s.shape:
            return np.ascontiguousarray(feed[s.name], dtype=numpy_dtype(s.dtype))
        value = s.value if s.is_constant() else np.asarray(feed[s.name]).reshape(-1)[0]
        return np.asarray(value, dtype=numpy_dtype(s.dtype))  # 0-d (ascontiguousarray would make it 1-d)

    return {s.name: one(s) for s in inputs}


def reference_outputs(model: OnnxModel, feed: dict, inputs: list) -> dict:
    """The golden outputs by name: ONNX Runtime in fp32 on the CPU, one sample per call (as the other sources)."""
    n = len(next(iter(feed.values())))
    chunks = [model.run(example({k: a[i:i + 1] for k, a in feed.items()}, inputs)) for i in range(n)]
    for name, a in chunks[0].items():
        if not isinstance(a, np.ndarray):
            raise UsageError(f"output {name} is a {type(a).__name__}, not a tensor: deploycmp compares tensors")
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def batch_works(model: OnnxModel, args: dict) -> bool:
    """Whether the graph takes `args` (another batch size, sequence length ... than the export's) and returns
    outputs of their batch size."""
    try:
        n = len(next(a for a in args.values() if np.ndim(a)))
        return all(np.shape(o)[:1] == (n,) for o in model.run(args).values())
    except Exception:
        return False


def count_gflops(model, args) -> float | None:
    """Not counted for ONNX files in this version (the report shows '-')."""
    return None


def set_threads(threads: int) -> None:
    global _threads
    _threads = threads
