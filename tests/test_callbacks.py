from nnresearch.callbacks import sweep_size


def test_sweep_size_multiplies_sweeps_and_command_line_wins():
    assert sweep_size(["model.depth=1,2,4", "trainer.epochs=2"], {"model.activation": "relu,tanh"}) == 6
    assert sweep_size(["trainer.seed=0"], {"trainer.seed": "0,1,2", "model.depth": "range(1,5)"}) == 4
    assert sweep_size([], {}) == 1
