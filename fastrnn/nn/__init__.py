"""Modules: drop-in RNNs, attention, and the seq2seq blocks."""
from fastrnn.nn.attention import Attention, AttentionMemory
from fastrnn.nn.decoding import DecodeResult, beam_search, clear_cuda_graphs, greedy_decode
from fastrnn.nn.plot import plot_attention
from fastrnn.nn.rnn import GRU, LSTM, GRUCell, LSTMCell
from fastrnn.nn.seq2seq import AttentionDecoder, DecoderState, Encoder, EncoderOutput

__all__ = ["LSTM", "GRU", "LSTMCell", "GRUCell", "Attention", "AttentionMemory",
           "Encoder", "EncoderOutput", "AttentionDecoder", "DecoderState", "greedy_decode",
           "beam_search", "DecodeResult", "clear_cuda_graphs", "plot_attention"]
