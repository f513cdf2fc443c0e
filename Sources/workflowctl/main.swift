print("workflowctl")
