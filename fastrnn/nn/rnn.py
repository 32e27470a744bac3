"""Drop-in torch.nn.LSTM/GRU/LSTMCell/GRUCell on fastrnn's ops.

Placeholder: until the module work lands these are torch.nn's own classes under fastrnn names.
"""
import torch


class LSTM(torch.nn.LSTM):
    pass


class GRU(torch.nn.GRU):
    pass


class LSTMCell(torch.nn.LSTMCell):
    pass


class GRUCell(torch.nn.GRUCell):
    pass
