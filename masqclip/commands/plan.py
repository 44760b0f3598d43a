"""Write the pipeline manifest of a config: every evaluation (setting, stage, round, seed, variant,
test role, dataset, metrics file), the tables and plots to draw and the training curves they read.
The workflow's 'manifest' rule runs it; 'masqclip results' reads the file it writes.

  masqclip plan --config pipeline.yaml --output results/manifest.json
  masqclip plan --config-json '{"results": ..., ...}' --output results/manifest.json

The config must already be valid (the workflow validates it against its schema first); references
between its fields are checked here too, as in the workflow.
"""
from __future__ import annotations

import json

COMMAND = "plan"
HELP = "write the manifest of a pipeline config (what the result tables and plots read)"


def add_arguments(parser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="YAML", help="pipeline config file")
    src.add_argument("--config-json", metavar="JSON", help="pipeline config as a JSON object")
    parser.add_argument("--output", required=True, metavar="FILE", help="manifest JSON to write")


def main(args) -> int:
    from ..errors import UserError
    from ..pipeline import Plan

    import yaml

    try:
        if args.config:
            with open(args.config, encoding="utf-8") as fh:
                config = yaml.safe_load(fh)
        else:
            config = json.loads(args.config_json)
        plan = Plan.from_config(config)
    except KeyError as err:
        raise UserError(f"the pipeline config has no field {err}") from None
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as err:  # ValueError: JSON too
        raise UserError(f"pipeline config: {err}") from None
    plan.manifest().write(args.output)
    print(args.output)
    return 0
