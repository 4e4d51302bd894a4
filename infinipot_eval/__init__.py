"""Evaluation of streaming video memory: synthetic world and bags, question files, offline and live replay.

Kept import-free on purpose: `import infinipot_eval` must not pull in torch, rosbags or rclpy; import the
module you need (`infinipot_eval.world`, `.question_gen`, `.questions`, `.bagio`, `.replay`, ...).
See docs/evaluation.md.
"""
