"""Final-answer extraction: last box outside code blocks, brace matching, fallbacks."""

from torl.reward import extract_answer, extract_boxed


def test_last_box_wins_and_nested_braces_are_matched():
    assert extract_answer(r"first \boxed{3}, then \boxed{\frac{1}{\sqrt{2}}}.") == r"\frac{1}{\sqrt{2}}"
    assert extract_answer(r"$\boxed{\{1,2\}}$") == r"\{1,2\}"


def test_box_variants():
    assert extract_answer(r"so \boxed 5.") == "5."
    assert extract_answer(r"\fbox{8} it is") == "8"
    assert extract_answer(r"\boxed {12}") == "12"
    assert extract_answer(r"\boxedx") is None


def test_boxes_inside_code_and_output_blocks_are_not_answers():
    text = "```python\nprint(r'\\boxed{7}')\n```\n```output\n\\boxed{7}\n```\nno answer yet"
    assert extract_answer(text) is None
    assert extract_answer(text + r" ... \boxed{5}") == "5"
    assert extract_boxed(text) == "7"  # gold extraction applies no fence rules


def test_unclosed_fence_hides_the_rest_and_unclosed_box_is_no_answer():
    assert extract_answer("```python\nprint('\\boxed{6}')") is None
    assert extract_answer(r"\boxed{3} then \boxed{4") is None
    assert extract_answer(r"\boxed{}") is None


def test_latex_fences_still_count():
    assert extract_answer("```latex\n\\boxed{9}\n```") == "9"


def test_fallbacks_only_when_asked():
    text = "Adding them gives the answer is $42$. Done"
    assert extract_answer(text) is None
    assert extract_answer(text, fallbacks=True) == "42"
    assert extract_answer("Final answer: \\frac{1}{2}", fallbacks=True) == r"\frac{1}{2}"
    assert extract_answer("we get 3 apples and then 1,250 pears", fallbacks=True) == "1,250"
    assert extract_answer("no numbers", fallbacks=True) is None
    assert extract_answer(r"\boxed{5} wins over the answer is 7", fallbacks=True) == "5"


def test_long_input_is_linear():
    text = "{" * 100_000 + r"\boxed{1}"
    assert extract_answer(text) == "1"
