print("workflowd-bench stub")
