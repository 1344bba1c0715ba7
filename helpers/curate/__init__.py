"""Curation: from raw teacher samples to a training set, one stage at a time, with a funnel of what was dropped and why.

verify -> calculator -> filters -> dedup -> decontam -> align -> select -> export;
``consistency`` replaces ``verify`` where there are no reference answers.
"""
