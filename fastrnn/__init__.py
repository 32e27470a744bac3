"""fastrnn: fused LSTM/GRU and attention kernels for PyTorch, drop-in modules, seq2seq blocks.

Public API: see shared/docs/DESIGN.md. ``import fastrnn`` never fails because the compiled
extension is missing: it warns once and the reference backend takes over.
"""
from fastrnn import backends, ops
from fastrnn._ext import built_with_cuda, has_ext
from fastrnn.nn import GRU, LSTM, Attention, AttentionMemory, GRUCell, LSTMCell
from fastrnn.nn import (AttentionDecoder, DecodeResult, DecoderState, Encoder, EncoderOutput,
                        beam_search, clear_cuda_graphs, greedy_decode, plot_attention)

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "LSTMCell", "GRUCell", "Attention", "AttentionMemory",
           "Encoder", "EncoderOutput", "AttentionDecoder", "DecoderState", "greedy_decode",
           "beam_search", "DecodeResult", "clear_cuda_graphs", "plot_attention", "ops", "backends",
           "built_with_cuda", "has_ext"]
