"""The planted-topics catalogue the learning tests share, and LEARN-vs-popularity scoring."""

from __future__ import annotations

import torch

from learn_core.datasets import synthetic
from learn_core.models import FrozenContent, LearnModel, Popularity
from trainers.evaluation import eval_loop, summarise
from trainers.learn import learn_score_fn
from trainers.splits import Split, leave_one_out


def planted(
    n_items: int, n_users: int, mean_events: float, seed: int, dim: int
) -> tuple[Split, FrozenContent]:
    """A synthetic catalogue's leave-one-out split and its topic-structured content vectors."""
    ds, topics = synthetic.generate(
        n_items=n_items, n_users=n_users, mean_events=mean_events, seed=seed
    )
    split = leave_one_out(ds, cold_fraction=0.1, seed=0)
    return split, FrozenContent(torch.from_numpy(synthetic.planted_content(topics, dim=dim)))


def learn_and_popularity(
    model: LearnModel, inputs: FrozenContent, split: Split, history_len: int
) -> tuple[dict, dict]:
    """Test-split summaries (overall and slices) of the trained model and of popularity."""
    learn = summarise(eval_loop(learn_score_fn(model, inputs, history_len), split), split)
    pop = Popularity(split.n_items).fit(split.train)
    return learn, summarise(eval_loop(lambda u, h: pop.scores(len(u)), split), split)
