"""Token log-probs and the masked NLL, against a direct computation."""

import torch

from ledex_rl.losses import IGNORE, logprob_lists, masked_nll, token_logprobs


def test_masked_nll_counts_only_labelled_tokens_and_accepts_a_logit_tail():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[IGNORE] * 3 + [1, 2, 3], [IGNORE] * 4 + [4, 5]])
    logp = torch.log_softmax(logits, -1)
    expected = -sum(logp[b, t - 1, labels[b, t]] for b in range(2) for t in range(6) if labels[b, t] != IGNORE)
    nll, count = masked_nll(logits, labels)
    assert count == 5 and torch.isclose(nll, expected)
    tail_nll, tail_count = masked_nll(logits[:, -4:], labels)  # logits from position 2 on: enough for label 3 on
    assert tail_count == 5 and torch.isclose(tail_nll, expected)


def test_logprob_lists_trim_padding():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 7)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    lists = logprob_lists(logits, ids, mask)
    assert [len(x) for x in lists] == [3, 1]
    assert lists[1][0] == torch.log_softmax(logits[1, 0], -1)[6].item()
    assert torch.allclose(torch.tensor(lists[0]), token_logprobs(logits, ids)[0])
