"""Federated learning: client training and aggregation shared by the in-process and Flower
engines."""
