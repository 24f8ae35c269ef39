"""Batched PixMix: the public API (re-exported from the modules of this package)."""
from dali_pixmix.augment.pixmix.grouped import (  # noqa: F401
    MIX_OPS,
    STRATEGIES,
    Normalized,
    Plan,
    augment_rows,
    check_strategy,
    draw_plan,
    empty_output,
    mix_add,
    mix_multiply,
    op_param_values,
    op_params,
    pixmix,
    sample_ab,
    trace_of,
)
