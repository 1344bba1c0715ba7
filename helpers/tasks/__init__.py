"""The tasks: each gives the prompts, its data as prompt rows, and how an answer is checked.

``math`` (generated word problems and GSM8K), ``headlines`` (a classifier that
thinks) and ``extraction`` (fields from short texts).
"""
