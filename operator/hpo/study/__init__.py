"""What a study is: spec, search space, trainer contract, store layout, summaries; pure."""
