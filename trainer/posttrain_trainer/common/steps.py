"""The step format of solutions: one place for what the PRM's labels and RLEIF's prompts share.

The AlignRound asks the student for step-formatted solutions before the labeler marks their steps, and
RLEIF asks its policy for the same format, so the process reward model scores steps of the kind it was
trained on (WizardMath labels the steps of its own model's solutions).

Reference: Luo et al., 2023 (WizardMath: process supervision of step-by-step solutions).
"""

from __future__ import annotations

STEP_FORMAT = (
    "Solve it step by step. Write each step on its own line, starting with its number "
    '("Step 1:", "Step 2:", ...), and give the final answer in the last step.'
)
"""The instruction that asks for a step-formatted solution."""


def step_prompt(question: str) -> str:
    """The question with the step-format instruction appended."""
    return f"{question.rstrip()}\n\n{STEP_FORMAT}"
