"""train.py without ranks: where a resumed run starts."""



from mnist_hpc import train


def test_resume_point_redoes_an_epoch_cut_short_by_a_step_budget():
    history = [{"epoch": 1, "steps": 430}, {"epoch": 2, "steps": 60}]
    assert train.resume_point({"epoch": 2, "partial": True, "history": history}) == (1, history[:1])
    assert train.resume_point({"epoch": 2, "partial": False, "history": history}) == (2, history)
    assert train.resume_point(None) == (0, [])
