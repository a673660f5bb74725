"""GRPO with verifiable rewards (`mathtune rlhf --rlhf_type grpo`): rollouts through generate.Generator, rewards
through evaluate.grading, the loss as TRL computes it, the run folder as sft's."""
