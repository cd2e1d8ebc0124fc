"""Federated 反哺 on Flower: apps, strategies, attacks, privacy."""
