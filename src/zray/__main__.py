"""``python -m zray`` is the same as the ``zray`` command.

One exception: ``python -m zray ZrayEstimator ...`` (or ``ZrayInformer``) is
how a RAIL/ceci pipeline runs zray's RAIL stages (ceci launches a stage of a
package as ``python3 -m PACKAGE STAGE_NAME --config ...``); see :mod:`zray.rail`.
"""

import sys

RAIL_STAGES = ("ZrayInformer", "ZrayEstimator")

if len(sys.argv) > 1 and sys.argv[1] in RAIL_STAGES:
    from ceci import PipelineStage

    import zray.rail  # noqa: F401  (registers the stages with ceci)

    sys.exit(PipelineStage.main())

from zray.cli import main  # noqa: E402

main()
