"""The speculative core: the decode loop, the acceptance rules, sampling, proposers, draft-length policies.

Glossary (these words, and only these, name the same things in the code):

- target: the model whose output we want; its distribution is what the user gets, exactly.
- draft: the cheap guess at the target's next tokens, and, for a model proposer, the model that makes it.
- proposer: what produces a draft (`proposers.py`): prompt lookup (n-gram), a draft model, or `self:N`.
- round: one target forward over [last token + K draft tokens], and what follows from it (`loop.py`).
- K: the number of draft tokens a round verifies (K = 0 is a plain decoding step).
- accepted tokens: the draft tokens the acceptance rule keeps (`acceptance_rules.py`).
- recovered token: the target's own token at the first rejected position (sampled from the residual).
- bonus token: the target's token after the last draft token, when all K were accepted.
  A round emits accepted + one recovered or bonus token, so mean acceptance length counts the bonus.
- policy: chooses K before each round (`policies.py`; `auto` in `auto_policy.py`, with the acceptance
  forecast it plans with in `acceptance_forecast.py`).
- v(n): seconds of one target forward over n new tokens on this machine, the cost profile (`costs.py`).
"""
