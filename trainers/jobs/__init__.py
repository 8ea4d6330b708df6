"""Scheduled jobs: retrain the towers and CVR head, evaluate, backfill, switch."""
