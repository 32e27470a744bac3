"""Functional ops: one public function per kernel family (validate -> pick backend -> call)."""
from fastrnn.ops.attention import attention
from fastrnn.ops.decode import greedy_update
from fastrnn.ops.gru import gru, gru_cell
from fastrnn.ops.linear import linear, linear_cat
from fastrnn.ops.lstm import lstm, lstm_cell

__all__ = ["lstm", "lstm_cell", "gru", "gru_cell", "attention", "linear", "linear_cat", "greedy_update"]
