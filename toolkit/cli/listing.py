"""deploycmp list: the formats, runtimes, int8 paths, targets and kinds of model, each read from where it is
declared, and which are available in this install."""
from __future__ import annotations

import click


def list_everything(targets_file) -> int:
    """Models, formats, runtimes and targets, and which are available in this install."""
    from deploycmp import exporters
    from deploycmp import runtimes
    from deploycmp.measure.targets import BUILTIN, load_targets_file

    def avail(requires):
        absent = runtimes.missing(requires)
        return "available" if not absent else f"unavailable ({', '.join(absent)} not installed)"

    click.echo("formats:")
    for name in exporters.EXPORTERS:
        mod = exporters.get(name)
        for fw in mod.SOURCES:
            deprecated = f"; deprecated upstream: {mod.DEPRECATED}" if getattr(mod, "DEPRECATED", None) else ""
            click.echo(f"  {name:14} from {fw:6} quantization {','.join(mod.QUANTIZATIONS):24} "
                       f"{avail(exporters.requirements(name, fw, 'int8' if len(mod.QUANTIZATIONS) > 1 else 'none'))}"
                       f"{deprecated}")
    click.echo("runtimes:")
    for name in runtimes.RUNTIMES:
        mod = runtimes.get(name)
        opt_in = "; opt-in: only on targets whose runtimes list names it" if runtimes.opt_in(name) else ""
        click.echo(f"  {name:15} runs {', '.join(mod.FORMATS)} on {', '.join(runtimes.devices(name))}; "
                   f"{avail(mod.REQUIRES)}{opt_in}")
    from deploycmp.export.requantize_worker import QUANTIZERS, quantizer
    from deploycmp.gate.explain import EXPLAINERS

    click.echo("int8 paths explain and repair take:")
    for fmt, runtime in EXPLAINERS:
        methods = ", ".join(quantizer(fmt).CALIBRATION_METHODS) if fmt in QUANTIZERS else None
        click.echo(f"  {fmt:14} on {runtime:13} " + (f"repair calibrations {methods}; layers kept in float"
                                                       if methods else "explain only"))
    click.echo("targets:")
    for name, t in {**BUILTIN, **(load_targets_file(targets_file) if targets_file else {})}.items():
        reason = t.unavailable_reason()
        runs = ", ".join(t.runtimes) if t.runtimes else "every runtime that is not opt-in"
        click.echo(f"  {name:14} {t.describe()}; runs {runs}" + (f" (unavailable here: {reason})" if reason else ""))
    click.echo("models (--model):\n"
               "  resnet18                     a torchvision model by name (input and weights from torchvision)\n"
               "  mypkg.models:ranker          package.module:factory returning a torch.nn.Module; its inputs from\n"
               "                               --input, checked against forward(): --input ids:int64:1,16 "
               "--input feats:float32:1,8 --value-range ids:0,1000\n"
               "  model.pt / model.pt2         a TorchScript file or a torch.export program (give --input)\n"
               "  my-bert/ (config.json)       a Hugging Face save_pretrained directory; --task text-classification,\n"
               "                               token-classification, feature-extraction or image-classification\n"
               "                               (default: its config's architecture); inputs from its config\n"
               "  hf:prajjwal1/bert-tiny       a Hugging Face model id, from the local cache only (no download)\n"
               "  keras:MobileNetV2            a keras.applications model by name\n"
               "  keras-hub:bert_tiny_en_uncased  a KerasHub preset (name, kaggle:// or hf:// handle, or directory),\n"
               "                               from the local cache only; --task as for Hugging Face models\n"
               "  model.keras / saved_model/   a Keras file (inputs read from it) or a SavedModel directory\n"
               "  model.onnx                   an ONNX file (inputs read from its graph; reference: ONNX Runtime fp32)\n"
               "torchvision models:")
    if not runtimes.missing(("torchvision",)):
        from deploycmp.sources.torch import torchvision_names

        click.echo("  " + " ".join(torchvision_names()))
    return 0
