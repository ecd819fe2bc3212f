"""What an explanation costs: /v1/explain's work against /v1/score's on the same request.

Both run in process on a real Redis with a warm row cache, T=50 behaviours, at C=10 and C=50
candidates (50 is the default explain limit). Also: the score path's graph run with and
without fetching the attention output, to show that exporting it costs /v1/score nothing.

    python -m bench.explain
"""

from __future__ import annotations

from app.explain import explain_request
from bench.common import cpu_model, ms, time_calls, write_json
from bench.inprocess import make_service
from bench.model import load_bench_model
from bench.stack import published_stack
from bench.workload import Catalogue, catalogue_of, random_slates, score_request
from core.graph import one_user_feeds

CANDIDATES = (10, 50)


def run_explain(client, url: str, ns: str, version: str, catalogue: Catalogue) -> dict:
    service = make_service(client, url, ns, version, cache_rows=100_000)
    rows = {}
    for c in CANDIDATES:
        request = score_request(random_slates(catalogue, 1, seed=c, c=c)[0])
        bundle = service.pin(request)
        score = time_calls(lambda r=request, b=bundle: service.score(r, b))
        explain = time_calls(lambda r=request, b=bundle: explain_request(service, r, b))
        rows[c] = {"score": score, "explain": explain, "ratio": explain.p50_ms / score.p50_ms}
    return {"by_candidates": rows, "graph": graph_outputs(service, catalogue)}


def graph_outputs(service, catalogue: Catalogue) -> dict:
    """session.run for scores only vs scores and attention, on the same prepared tensors."""
    request = score_request(random_slates(catalogue, 1, seed=3, c=50)[0])
    prepared = service.prepare(request, service.pin(request))
    scorer = prepared.bundle.scorer
    feeds = one_user_feeds(scorer.input_names, prepared.inputs)
    return {
        "scores_only": time_calls(lambda: scorer.session.run([scorer.output], feeds)),
        "with_attention": time_calls(
            lambda: scorer.session.run([scorer.output, scorer.attention], feeds)
        ),
    }


def print_report(result: dict) -> None:
    print(f"\nExplain vs score, in process, warm cache, T=50 ({cpu_model()}), ms p50 / p99")
    for c, row in result["by_candidates"].items():
        score, explain = row["score"], row["explain"]
        print(
            f"C={c:<3} score {ms(score.p50_ms)} / {ms(score.p99_ms)}   "
            f"explain {ms(explain.p50_ms)} / {ms(explain.p99_ms)}   ratio {row['ratio']:.2f}"
        )
    graph = result["graph"]
    print(
        f"graph run at C=50: scores only {ms(graph['scores_only'].p50_ms)}, "
        f"scores + attention {ms(graph['with_attention'].p50_ms)}"
    )


def main() -> None:
    bench = load_bench_model()
    with published_stack(bench) as stack:
        result = run_explain(*stack.args(), catalogue_of(bench.bundle))
    print_report(result)
    print(write_json("explain.json", result | {"cpu": cpu_model()}))


if __name__ == "__main__":
    main()
