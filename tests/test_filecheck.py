import pytest

from filecheck import FileCheckError, filecheck

TEXT = """graph @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {
  %0 = relu(%x) : tensor<4xf32>
  %1 = neg(%0) : tensor<4xf32>
  return %1
}
graph @g() -> () {
  return
}
"""


def test_check_in_order_and_regex():
    filecheck(TEXT, "CHECK: graph @f\nCHECK: %{{[0-9]+}} = neg\nCHECK: return %1")


def test_check_out_of_order_fails():
    with pytest.raises(FileCheckError, match="not found"):
        filecheck(TEXT, "CHECK: neg\nCHECK: relu")


def test_check_next():
    filecheck(TEXT, "CHECK: relu\nCHECK-NEXT: neg")
    with pytest.raises(FileCheckError, match="not on the next line"):
        filecheck(TEXT, "CHECK: relu\nCHECK-NEXT: return")


def test_check_not_between_matches_and_at_end():
    filecheck(TEXT, "CHECK: relu\nCHECK-NOT: add\nCHECK: neg")
    with pytest.raises(FileCheckError, match="CHECK-NOT: 'relu' found"):
        filecheck(TEXT, "CHECK-LABEL: graph @f\nCHECK-NOT: relu\nCHECK: return")
    with pytest.raises(FileCheckError, match="found"):
        filecheck(TEXT, "CHECK: neg\nCHECK-NOT: graph @g")


def test_label_and_blank_runs():
    filecheck(TEXT, "CHECK-LABEL: graph @g\nCHECK-NEXT:   return")


def test_no_directives_is_an_error():
    with pytest.raises(FileCheckError, match="no CHECK"):
        filecheck(TEXT, "nothing here")
