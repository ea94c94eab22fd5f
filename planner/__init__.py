"""Planner: a layer DAG + a GPU description -> a fusion plan (which layers each FCM fuses).

Not implemented yet: the extractor's DAG is its input (see DESIGN.md §4).
"""
