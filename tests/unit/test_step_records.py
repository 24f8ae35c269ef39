"""Step records: the loss and flags of a step reach the host one step late, in step order, and
a step's batch is released only when its record is read."""
import weakref

import pytest
import torch

from dali_pixmix.training.records import StepRecords

pytestmark = pytest.mark.unit


def test_records_come_back_in_order_with_their_flags_and_labels():
    records = StepRecords(torch.device("cpu"), batch_size=3, keep_labels=True)
    records.push(torch.tensor(0.25), torch.tensor([4, 5, 6]), stop=False, save=True,
                 where=(7, 1, 2))
    records.push(torch.tensor(float("inf")), torch.tensor([1, 2, 3]), stop=True, save=False,
                 where=(8, 1, 3))
    with pytest.raises(RuntimeError, match="read the oldest"):  # both buffers are in use
        records.push(torch.tensor(1.0), torch.tensor([0, 0, 0]), stop=False, save=False,
                     where=(9, 2, 1))
    first, second = records.pop(), records.pop()
    assert (first.step, first.epoch, first.epoch_step, first.loss) == (7, 1, 2, 0.25)
    assert (first.nonfinite, first.stop, first.save, first.labels) == (False, False, True,
                                                                       [4, 5, 6])
    assert (second.step, second.loss, second.nonfinite, second.stop, second.save) == (
        8, float("inf"), True, True, False)
    assert second.labels == [1, 2, 3] and len(records) == 0


def test_a_buffer_is_reused_only_after_its_record_was_read():
    """A record's values survive the next push (the buffers rotate)."""
    records = StepRecords(torch.device("cpu"), batch_size=1)
    records.push(torch.tensor(1.0), torch.tensor([0]), stop=False, save=False, where=(1, 0, 1))
    for step in range(2, 6):
        records.push(torch.tensor(float(step)), torch.tensor([0]), stop=False, save=False,
                     where=(step, 0, step))
        record = records.pop()
        assert (record.step, record.loss, record.labels) == (step - 1, step - 1.0, None)
    assert records.pop().loss == 5.0


def test_a_steps_batch_stays_referenced_until_its_record_is_read():
    """DALI's zero-copy batches go back to DALI's pool when torch drops them, with no ordering
    against the step still queued on the device: the record slot keeps them until popped."""
    records = StepRecords(torch.device("cpu"), batch_size=2)
    batches = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)) for _ in range(2)]
    alive = [weakref.ref(images) for images, _ in batches]
    for step, (images, labels) in enumerate(batches, 1):
        records.push(torch.tensor(1.0), labels, stop=False, save=False, where=(step, 0, step),
                     batch=(images, labels))
    del batches, images, labels
    assert alive[0]() is not None and alive[1]() is not None  # only the slots hold them
    records.pop()
    assert alive[0]() is None and alive[1]() is not None
    records.pop()
    assert alive[1]() is None
