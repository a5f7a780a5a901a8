"""The streaming temporal CNN: configuration, network, targets, losses, dataset, training and export.

Everything here except `config` needs torch (training / export only); the node never imports it.
"""
