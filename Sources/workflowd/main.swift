print("workflowd")
