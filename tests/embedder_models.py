"""Tiny embedding models built on the spot, in the real on-disk formats, for the embedder tests.

Nothing is downloaded: a word-level tokenizer is trained with ``tokenizers`` on a few sentences, and
a small random token table (seeded) becomes

* a **model2vec** model: ``config.json``, ``model.safetensors`` (the table under ``embeddings``),
  ``tokenizer.json`` — the files ``model2vec.StaticModel.from_pretrained`` reads;
* a **fastembed** custom ONNX model: ``onnx/model.onnx`` (``input_ids`` → ``Gather`` from the
  table, times the attention mask → ``last_hidden_state``, which fastembed mean-pools), with
  ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json`` and ``config.json``.

:func:`expected_vectors` computes what each model must return (the mean of the table rows of a
text's known tokens, L2-normalized), independently of model2vec and fastembed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a fast red fox runs past a sleepy cat",
    "vector search finds the nearest embedding",
    "static embeddings average token vectors",
    "onnx runtime runs the graph on the cpu",
    "cats and dogs are friends",
]
PAD, UNK = "[PAD]", "[UNK]"


def train_tokenizer() -> object:
    """A lowercasing, whitespace-splitting word-level tokenizer: ``[PAD]`` = 0, ``[UNK]`` = 1."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=[PAD, UNK]))
    return tok


def token_table(vocab_size: int, dim: int, seed: int = 7) -> npt.NDArray[np.float32]:
    """The token vectors: seeded normal values, zero rows for ``[PAD]`` and ``[UNK]``."""
    table = np.random.default_rng(seed).normal(size=(vocab_size, dim)).astype(np.float32)
    table[:2] = 0.0
    return table


def build_model2vec(path: Path, dim: int = 16) -> tuple[object, npt.NDArray[np.float32]]:
    """Write a model2vec model to ``path``; returns its tokenizer and token table."""
    from safetensors.numpy import save_file

    tok = train_tokenizer()
    table = token_table(tok.get_vocab_size(), dim)  # type: ignore[attr-defined]
    path.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": table}, str(path / "model.safetensors"))
    tok.save(str(path / "tokenizer.json"))  # type: ignore[attr-defined]
    config = {
        "model_type": "model2vec",
        "architectures": ["StaticModel"],
        "hidden_dim": dim,
        "normalize": True,
    }
    (path / "config.json").write_text(json.dumps(config))
    return tok, table


def build_fastembed(path: Path, dim: int = 12) -> tuple[object, npt.NDArray[np.float32]]:
    """Write a fastembed-loadable ONNX model and its tokenizer files to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tok = train_tokenizer()
    table = token_table(tok.get_vocab_size(), dim, seed=11)  # type: ignore[attr-defined]
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Gather", ["table", "input_ids"], ["tokens"], axis=0),
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask_3d"]),
            helper.make_node("Mul", ["tokens", "mask_3d"], ["last_hidden_state"]),
        ],
        name="tiny_static_encoder",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        outputs=[
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", dim])
        ],
        initializer=[
            numpy_helper.from_array(table, name="table"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), name="last_axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dkv-tests")
    model.ir_version = 8  # readable by every onnxruntime the test extra installs
    onnx.checker.check_model(model)
    (path / "onnx").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path / "onnx" / "model.onnx"))
    tok.save(str(path / "tokenizer.json"))  # type: ignore[attr-defined]
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "pad_token": PAD}))
    (path / "special_tokens_map.json").write_text(json.dumps({"pad_token": PAD, "unk_token": UNK}))
    (path / "config.json").write_text(json.dumps({"pad_token_id": 0, "hidden_size": dim}))
    return tok, table


def expected_vectors(
    tok: object, table: npt.NDArray[np.float32], texts: Sequence[str]
) -> npt.NDArray[np.float32]:
    """Mean of the table rows of each text's known tokens, L2-normalized (what both models do)."""
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float64)
    for i, text in enumerate(texts):
        ids = [t for t in tok.encode(text).ids if t > 1]  # type: ignore[attr-defined]
        if ids:
            v = table[ids].astype(np.float64).mean(axis=0)
            out[i] = v / np.linalg.norm(v)
    return out.astype(np.float32)
