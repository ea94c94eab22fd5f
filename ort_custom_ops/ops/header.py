"""The op vocabulary as a C++ header: ``python -m ort_custom_ops.ops.header`` writes ``csrc/vocabulary.h``.

In: ``fcm_core.vocabulary``. Out: the header the custom-op library is built with: the kernels'
activation enum (``Act``) and the attribute spellings that name them, the fused op types of each
precision with their stage sequences (``kFp32Kinds``, ``kFp16Kinds``, ``kBf16Kinds``,
``int8::kFusedKinds``), the depthwise kernel sizes and strides, and every op's
attribute names (the shared attribute reader refuses a name that is not there), and the same
vocabulary as one line of text (``kText``), which the built library returns from
``FcmLibraryVocabulary`` for ``tests/ops/test_vocabulary.py`` to compare with :func:`text`.
``--check`` exits non-zero when the file is not what this module would write.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fcm_core import vocabulary

HEADER = Path(__file__).resolve().parents[1] / "csrc" / "vocabulary.h"


def _enum_name(name: str) -> str:
    return "k" + "".join(part.capitalize() for part in name.split("_"))


def text() -> str:
    """The vocabulary the library is built with, as one line of JSON (sorted keys)."""
    activations = {a.name: {"kernel": a.kernel, "clip": list(next(iter(a.dag.values())))
                            if a.kernel != a.name else None} for a in vocabulary.ACTIVATIONS.values()}
    kinds = {kind.name: {"stages": list(kind.stages), "ops": {p: kind.op_type(p) for p in kind.precisions}}
             for kind in vocabulary.KINDS.values()}
    return json.dumps({"domain": vocabulary.DOMAIN, "activations": activations, "kinds": kinds,
                       "dw_kernels": list(vocabulary.DW_KERNELS), "dw_strides": list(vocabulary.DW_STRIDES),
                       "attributes": {op: sorted(names) for op, names in vocabulary.op_attributes().items()}},
                      sort_keys=True, separators=(",", ":"))


def _alternatives(values) -> str:
    """(3, 5, 7) -> "3, 5 or 7"."""
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


def _cpp_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid C++ string literal for this text (no non-ASCII)


def render() -> str:
    acts = vocabulary.KERNEL_ACTIVATIONS
    lines = [
        "// The FCM op vocabulary for the C++ kernels. Generated from fcm_core/vocabulary.py by",
        "// `python -m ort_custom_ops.ops.header`: do not edit (tests/ops/test_vocabulary.py fails when the two",
        "// disagree).",
        "#pragma once",
        "",
        "#include <cstddef>",
        "",
        "namespace fcm {",
        "",
        "// What the kernels' epilogues compute (epilogue.h holds each formula).",
        "enum class Act : int { " + ", ".join(f"{_enum_name(a)}{' = 0' if i == 0 else ''}" for i, a in enumerate(acts)) + " };",
        "#define FCM_FOR_EACH_ACT(X) " + " ".join(f"X(Act::{_enum_name(a)})" for a in acts),
        "",
        "namespace vocabulary {",
        "",
        f"inline constexpr const char* kDomain = {_cpp_string(vocabulary.DOMAIN)};",
        "",
        "// Attribute spellings of the activations; an alias runs another activation with fixed clip bounds.",
        "struct ActivationName {",
        "  const char* name;",
        "  Act kind;",
        "  bool fixed_clip;",
        "  float lo, hi;",
        "};",
        "inline constexpr ActivationName kActivations[] = {",
    ]
    for a in vocabulary.ACTIVATIONS.values():
        if a.kernel != a.name:
            lo, hi = next(iter(a.dag.values()))
            lines.append(f"    {{{_cpp_string(a.name)}, Act::{_enum_name(a.kernel)}, true, {lo!r}f, {hi!r}f}},")
        else:
            lines.append(f"    {{{_cpp_string(a.name)}, Act::{_enum_name(a.kernel)}, false, 0.f, 0.f}},")
    lines += [
        "};",
        f"inline constexpr const char* kActivationList = {_cpp_string(', '.join(vocabulary.ACTIVATIONS))};",
        "",
        "// The depthwise kernel sizes and strides the kernels take, and the same as text for messages.",
        "inline constexpr int kDwKernels[] = {" + ", ".join(map(str, vocabulary.DW_KERNELS)) + "};",
        "inline constexpr int kDwStrides[] = {" + ", ".join(map(str, vocabulary.DW_STRIDES)) + "};",
        f"inline constexpr const char* kDwKernelList = {_cpp_string(_alternatives(vocabulary.DW_KERNELS))};",
        f"inline constexpr const char* kDwStrideList = {_cpp_string(_alternatives(vocabulary.DW_STRIDES))};",
        "template <size_t N>",
        "constexpr bool OneOf(long long value, const int (&allowed)[N]) {",
        "  for (int a : allowed) {",
        "    if (value == a) return true;",
        "  }",
        "  return false;",
        "}",
        "",
        "// Every op type of the domain and the attributes it may carry.",
    ]
    table = vocabulary.op_attributes()
    for op, names in table.items():
        lines.append(f"inline constexpr const char* k{op}Attributes[] = {{" + ", ".join(_cpp_string(n) for n in names) + "};")
    lines += [
        "struct OpAttributes {",
        "  const char* op;",
        "  const char* const* names;",
        "  size_t count;",
        "};",
        "inline constexpr OpAttributes kOpAttributes[] = {",
    ]
    lines += [f"    {{{_cpp_string(op)}, k{op}Attributes, {len(names)}}}," for op, names in table.items()]
    lines += [
        "};",
        "",
        "// The vocabulary as one line of JSON (FcmLibraryVocabulary returns it).",
        f"inline constexpr const char* kText = {_cpp_string(text())};",
        "",
        "}  // namespace vocabulary",
        "",
        "// A fused op type: its name, stage count and which stages are depthwise.",
        "struct FusedKind {",
        "  const char* name;",
        "  size_t stages;",
        "  bool depthwise[3];",
        "};",
    ]
    tables = {p: ("", f"k{p.capitalize()}Kinds") for p in vocabulary.FLOAT_PRECISIONS}  # kFp32Kinds, kFp16Kinds, ...
    tables["int8"] = ("int8", "kFusedKinds")
    for precision, (space, array) in tables.items():
        entries = []
        for kind in (k for k in vocabulary.KINDS.values() if precision in k.precisions):
            flags = [s == "dw" for s in kind.stages] + [False] * (3 - len(kind.stages))
            entries.append(f"    {{{_cpp_string(kind.op_type(precision))}, {len(kind.stages)}, "
                           f"{{{', '.join('true' if f else 'false' for f in flags)}}}}},")
        body = [f"inline constexpr FusedKind {array}[] = {{", *entries, "};"]
        lines += ([f"namespace {space} {{"] + body + [f"}}  // namespace {space}"]) if space else body
    lines += ["", "// The float layer op types (FLOAT_LAYER_ATTRIBUTES), one per float precision: fp32, fp16, bf16."]
    for layer in vocabulary.FLOAT_LAYER_ATTRIBUTES:
        names = ", ".join(_cpp_string(vocabulary.layer_op_type(layer, p)) for p in vocabulary.FLOAT_PRECISIONS)
        lines.append(f"inline constexpr const char* k{layer}LayerOps[] = {{{names}}};")
    lines += ["", "}  // namespace fcm", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ort_custom_ops.ops.header", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the header is up to date")
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        current = HEADER.read_text() if HEADER.is_file() else ""
        if current != wanted:
            print(f"{HEADER} is out of date: run python -m ort_custom_ops.ops.header", file=sys.stderr)
            return 1
        return 0
    HEADER.write_text(wanted)
    print(f"wrote {HEADER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
