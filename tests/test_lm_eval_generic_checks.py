"""lm-eval's own generic checks of a task folder, run on every dora_* and dora_*_mc task.

``BaseTasks`` is lm-eval's, copied from ``tests/test_tasks.py`` of the lm-eval 0.4.13 sdist
(EleutherAI/lm-evaluation-harness, MIT licence), which lm-eval runs on every new or changed task
of its own (``pip download --no-deps --no-binary :all: lm-eval==0.4.13``). Only the way the tasks
are chosen differs: that file picks changed tasks from git (its ``tests/utils.py``, not in the sdist);
here they are ours, reading the real items that ship with the package.
"""

from __future__ import annotations

from itertools import islice

import pytest
from helpers import REPO
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks import TaskManager

from dora_plugins.benchmarks import BENCHMARKS
from lm_eval_tasks import discovery

DEMO_DATA = REPO / "dora_plugins" / "demo_data" / "eval"
TASKS = [b.task for b in BENCHMARKS] + [b.mc_task for b in BENCHMARKS] + [b.text_task for b in BENCHMARKS]


@pytest.fixture(scope="module")
def loaded_tasks() -> dict[str, ConfigurableTask]:
    manager = TaskManager(
        include_defaults=False, include_path=discovery.TASK_DIR, metadata={"data_dir": str(DEMO_DATA)}
    )
    return manager.load(TASKS)["tasks"]


@pytest.fixture(params=TASKS)
def task_class(request, loaded_tasks) -> ConfigurableTask:
    return loaded_tasks[request.param]


@pytest.fixture()
def limit() -> int:
    return 10


class BaseTasks:
    """
    Base class for testing tasks
    """

    def test_download(self, task_class: ConfigurableTask):
        # Pass the task's own dataset_kwargs, the same way __init__ does.
        # Without them a task that relies on e.g. data_files cannot be loaded.
        task_class.download(task_class.config.dataset_kwargs)
        assert task_class.dataset is not None

    def test_has_training_docs(self, task_class: ConfigurableTask):
        assert task_class.has_training_docs() in [True, False]

    def test_check_training_docs(self, task_class: ConfigurableTask):
        if task_class.has_training_docs():
            assert task_class._config["training_split"] is not None

    def test_has_validation_docs(self, task_class):
        assert task_class.has_validation_docs() in [True, False]

    def test_check_validation_docs(self, task_class):
        if task_class.has_validation_docs():
            assert task_class._config["validation_split"] is not None

    def test_has_test_docs(self, task_class):
        assert task_class.has_test_docs() in [True, False]

    def test_check_test_docs(self, task_class):
        task = task_class
        if task.has_test_docs():
            assert task._config["test_split"] is not None

    def test_should_decontaminate(self, task_class):
        task = task_class
        assert task.should_decontaminate() in [True, False]
        if task.should_decontaminate():
            assert task._config["doc_to_decontamination_query"] is not None

    def test_doc_to_text(self, task_class, limit):
        task = task_class
        arr = (
            list(islice(task.test_docs(), limit))
            if task.has_test_docs()
            else list(islice(task.validation_docs(), limit))
        )
        _array = [task.doc_to_text(doc) for doc in arr]
        # space convention; allow txt to have length 0 for perplexity-like tasks since the model tacks an
        # <|endoftext|> on
        target_delimiter: str = task.config.target_delimiter
        if not task.multiple_input:
            for x in _array:
                assert isinstance(x, str)
                assert (x[-1].isspace() is False if len(x) > 0 else True) if target_delimiter.isspace() else True, (
                    "doc_to_text ends in a whitespace and target delimiter also a whitespace"
                )
        else:
            pass

    def test_create_choices(self, task_class, limit):
        task = task_class
        arr = (
            list(islice(task.test_docs(), limit))
            if task.has_test_docs()
            else list(islice(task.validation_docs(), limit))
        )
        if "multiple_choice" in task._config.output_type:
            _array = [task.doc_to_choice(doc) for doc in arr]
            assert all(isinstance(x, list) for x in _array)
            assert all(isinstance(x[0], str) for x in _array)

    def test_doc_to_target(self, task_class, limit):
        task = task_class
        arr = (
            list(islice(task.test_docs(), limit))
            if task.has_test_docs()
            else list(islice(task.validation_docs(), limit))
        )
        _array_target = [task.doc_to_target(doc) for doc in arr]
        if task._config.output_type == "multiple_choice":
            # TODO<baber>: label can be string or int; add better test conditions
            for label in _array_target:
                if isinstance(label, list):
                    # tasks with multiple gold answers (e.g. webqs) return a list of indices
                    assert all(isinstance(x, int) for x in label)
                else:
                    assert isinstance(label, (int, str))

    def test_build_all_requests(self, task_class, limit):
        task_class.build_all_requests(rank=1, limit=limit, world_size=1)
        assert task_class.instances is not None

    # ToDO: Add proper testing
    def test_construct_requests(self, task_class, limit):
        task = task_class
        arr = (
            list(islice(task.test_docs(), limit))
            if task.has_test_docs()
            else list(islice(task.validation_docs(), limit))
        )
        # ctx is "" for multiple input tasks
        requests = [
            task.construct_requests(doc=doc, ctx="" if task.multiple_input else task.doc_to_text(doc)) for doc in arr
        ]
        assert len(requests) == limit if limit else True


class TestDoraTasks(BaseTasks):
    """lm-eval's checks, on each of our sixteen tasks."""
