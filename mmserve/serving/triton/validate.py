"""Check a generated repository without a server: every `config.pbtxt` parsed with Triton's own model-config
protobuf (shipped in tritonclient), every tower's inputs and outputs against the exported ONNX graph, and every
ensemble step against the models it calls. What a CPU host can check of a GPU repository (`--target ngc`).

    problems = check_repository(Path("model_repository"), settings.export_dir())   # [] when sound
"""

from __future__ import annotations

from pathlib import Path

from mmserve.models.export import IMAGE_TOWER_FILE, TEXT_TOWER_FILE

# Triton data types of the ONNX element types the towers use.
_ONNX_TO_TRITON = {2: "TYPE_UINT8", 6: "TYPE_INT32", 1: "TYPE_FP32"}
# Which exported graph each tower-hosting model stands for (python layout: embed_*; ngc: *_engine).
_TOWERS = {"embed_image": IMAGE_TOWER_FILE, "embed_text": TEXT_TOWER_FILE,
           "image_engine": IMAGE_TOWER_FILE, "text_engine": TEXT_TOWER_FILE}


def load_configs(repository: Path) -> dict[str, object]:
    """name -> parsed `ModelConfig` (a protobuf syntax or field error names the file)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    configs = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise ValueError(f"{path}: {error}") from None
        if config.name != path.parent.name:
            raise ValueError(f"{path}: names model {config.name!r}, but lives in {path.parent.name!r}")
        configs[config.name] = config
    return configs


def check_repository(repository: Path, onnx_dir: Path) -> list[str]:
    """What is wrong with the repository (empty when nothing is)."""
    from tritonclient.grpc import model_config_pb2

    configs = load_configs(repository)
    problems: list[str] = []
    data_type = model_config_pb2.DataType.Name
    for name, config in configs.items():
        if name in _TOWERS and config.platform != "ensemble":  # type: ignore[attr-defined]
            problems += _check_against_graph(name, config, onnx_dir / _TOWERS[name], data_type)
        if config.platform == "ensemble":  # type: ignore[attr-defined]
            problems += _check_ensemble(name, config, configs, data_type)
    return problems


def _graph_io(onnx_path: Path) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def describe(values):
        return [(v.name, _ONNX_TO_TRITON.get(v.type.tensor_type.elem_type, "?"),
                 [d.dim_value if d.dim_value else -1 for d in v.type.tensor_type.shape.dim[1:]]) for v in values]

    return describe(graph.input), describe(graph.output)


def _check_against_graph(name: str, config, onnx_path: Path, data_type) -> list[str]:
    """The tower's tensor input (and its output) as the graph has them."""
    inputs, outputs = _graph_io(onnx_path)
    (graph_input,) = inputs
    problems = []
    served = {tensor.name: tensor for tensor in config.input}
    # The python layout's model takes the graph's tensor under the modality's name ("pixels" for "images").
    candidates = [graph_input[0], "pixels"] if graph_input[0] == "images" else [graph_input[0]]
    found = next((served[c] for c in candidates if c in served), None)
    if found is None:
        problems.append(f"{name}: no input for the graph's {graph_input[0]!r} (has {sorted(served)})")
    else:
        if data_type(found.data_type) != graph_input[1]:
            problems.append(f"{name}: input {found.name} is {data_type(found.data_type)}, the graph's is "
                            f"{graph_input[1]}")
        if list(found.dims) != graph_input[2]:
            problems.append(f"{name}: input {found.name} has dims {list(found.dims)}, the graph's {graph_input[2]}")
    for graph_output, served_output in zip(outputs, config.output):
        if (served_output.name, data_type(served_output.data_type), list(served_output.dims)) != graph_output:
            problems.append(f"{name}: output {served_output.name} {data_type(served_output.data_type)} "
                            f"{list(served_output.dims)} is not the graph's {graph_output}")
    return problems


def _check_ensemble(name: str, config, configs: dict[str, object], data_type) -> list[str]:
    """Every step names a model of the repository and tensors it has; ensemble tensors agree in type."""
    problems = []
    known = {tensor.name: data_type(tensor.data_type) for tensor in [*config.input, *config.output]}
    for step in config.ensemble_scheduling.step:
        target = configs.get(step.model_name)
        if target is None:
            problems.append(f"{name}: step calls {step.model_name!r}, which the repository does not have")
            continue
        inputs = {t.name: data_type(t.data_type) for t in target.input}  # type: ignore[attr-defined]
        outputs = {t.name: data_type(t.data_type) for t in target.output}  # type: ignore[attr-defined]
        for key, value in step.input_map.items():
            if key not in inputs:
                problems.append(f"{name}: {step.model_name} has no input {key!r}")
            elif value in known and known[value] != inputs[key]:
                problems.append(f"{name}: {value} is {known[value]} but {step.model_name}.{key} takes {inputs[key]}")
            known.setdefault(value, inputs.get(key, "?"))
        for key, value in step.output_map.items():
            if key not in outputs:
                problems.append(f"{name}: {step.model_name} has no output {key!r}")
            else:
                known.setdefault(value, outputs[key])
        if target.max_batch_size < config.max_batch_size:  # type: ignore[attr-defined]
            problems.append(f"{name}: batches up to {config.max_batch_size}, {step.model_name} only "
                            f"{target.max_batch_size}")  # type: ignore[attr-defined]
    return problems
