"""What the trainer accepts, in plain Python and pydantic: no torch, no transformers.

The API validates requests against these same definitions (it imports nothing else of the trainer),
so a job the API accepts is a job the trainer runs, and the two can never disagree:

    hyperparameters.py  every method's knobs: fields, types, defaults, bounds, help text
    formats.py          the one rule that tells a chat, prompt/completion or preference row apart
    rules.py            the per-example rules: what a good row of each format is (roles, content, ...)
    plan.py             the step arithmetic: optimiser steps per epoch, outer-iteration slices, totals
    scores.py           which methods score their training demonstrations, by what, and the file name
"""
