"""Modules: drop-in RNNs, attention, and the seq2seq blocks."""
from fastrnn.nn.attention import Attention, AttentionMemory
from fastrnn.nn.rnn import GRU, LSTM, GRUCell, LSTMCell

__all__ = ["LSTM", "GRU", "LSTMCell", "GRUCell", "Attention", "AttentionMemory"]
