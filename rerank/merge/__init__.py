"""Merge: rank every domain's hypotheses together by calibrated score, evaluate, report."""
