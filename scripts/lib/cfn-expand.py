"""Prints a CloudFormation template with its AWS::LanguageExtensions transform applied (as JSON).

checkov does not look inside Fn::ForEach, so the one-host-per-partition resources of
infrastructure/cloudformation-template.yaml are checked on this expansion too (and the IoT policy
test reads the policies from it). cfn-lint's own transform does the work: it is what AWS does,
minus the parameters - `Partitions` takes its default.

    python cfn-expand.py <template.yaml>   (run with the lint virtualenv's python)
"""

import json
import sys

from cfnlint.decode import decode
from cfnlint.template import Template
from cfnlint.template.transforms.transform import Transform


def main(path: str) -> None:
    template, matches = decode(path)
    if matches:
        sys.exit("\n".join(str(m) for m in matches))
    cfn = Template(path, template, ["us-east-1"])
    Transform().transform(cfn)
    expanded = dict(cfn.template)
    expanded.pop("Transform", None)
    json.dump(expanded, sys.stdout, indent=1, default=str)
    print()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
